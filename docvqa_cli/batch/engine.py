"""The engine contract of a batch job: what an engine is given and what it gives back, the
answer step as batch sees it, the failed record, and the job's ``Summary``. See
ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from docvqa_cli import records
from docvqa_cli.batch.questions import Question
from docvqa_cli.errors import ErrorKind
from docvqa_cli.options import AnswerOptions

ERROR_LIMIT = 200  # characters of an exception's message kept in an error record

class AnswerStep(Protocol):
    """The answer step as batch sees it (``pipeline.Answerer`` is the real one).

    ``answer``: pages of one document, its pending (id, question) pairs and a keep ratio in,
    one record per question out (in any order). ``answer_many``: [(doc, pages, questions)] of
    several documents in, a list of records per document out, in order; used when
    ``batch_size`` > 1, so that questions of consecutive documents share forwards.
    ``model_name`` is what the error records of the job carry. A failure is either raised
    (its type says its kind, ``errors.kind_of``: batch retries out of memory with fewer tiles)
    or recorded (``error`` and ``failure`` set): a recorded failure is final."""

    batch_size: int
    model_name: str | None

    def answer(self, pages: list, questions: list[tuple[str, str]], keep: float) -> Iterable[records.Answer]: ...

    def answer_many(self, items: list, keep: float) -> list[list[records.Answer]]: ...


# An engine runs the pending work: ``(todo, keep, stop)`` in, where ``todo`` is ``plan``'s
# list of (document, its pending questions) and ``stop.flag`` turns true on Ctrl-C; out, per
# document, ``(doc, its records)``, documents in any order, each document's records
# together. ``run`` writes them, counts them, shows progress and annotates: the same for
# every engine (``local.local_engine`` in this process, ``ray.RayEngine`` on a Ray cluster).
Engine = Callable[[list, float, object], Iterator[tuple[str, Iterable[records.Answer]]]]


def failed_record(doc: str, q: Question, message: str, model_name: str | None,
                  kind: ErrorKind = ErrorKind.other) -> records.Answer:
    return records.Answer(doc=doc, question_id=q.id, question=q.text, model=model_name, error=message, failure=kind)


@dataclass
class Summary:
    documents: int = 0  # documents in the job
    documents_done: int = 0  # documents answered (or failed) in this run
    answered: int = 0  # records without error written in this run
    errors: int = 0  # records with an error written in this run
    skipped: int = 0  # pairs already in the output
    skipped_errors: int = 0  # of those, records that carry an error
    retried: int = 0  # pairs whose error record was answered again (--retry-errors)
    seconds: float = 0.0
    tiles_kept: int = 0
    tiles_total: int = 0
    interrupted: bool = False
    repaired_bytes: int = 0
    annotated: int = 0  # annotated copies written (--annotate)
    annotate_failed: int = 0  # annotated copies that could not be written

    @property
    def job_has_errors(self) -> bool:
        """Records carry an error, or --annotate wrote none of the copies it tried."""
        return bool(self.errors or self.skipped_errors or (self.annotate_failed and not self.annotated))

    def line(self) -> str:
        rate = self.documents_done / self.seconds if self.seconds > 0 else 0.0
        tiles = (
            f"tiles encoded {self.tiles_kept} of {self.tiles_total} ({100 * self.tiles_kept / self.tiles_total:.0f}%)"
            if self.tiles_total else "tiles encoded 0"
        )
        skipped = f", {self.skipped} already done" if self.skipped else ""
        if self.retried:
            skipped += f", {self.retried} retried"
        if self.annotate_failed:
            skipped += f", {self.annotate_failed} annotated copies not written"
        return (
            f"batch: {self.answered} answered, {self.errors} errors{skipped}; "
            f"{self.documents_done} of {self.documents} documents in {self.seconds:.1f} s "
            f"({rate:.2f} docs/s); {tiles}"
        )


def model_answerer(open_backend: Callable[[], tuple], answer: AnswerOptions = AnswerOptions(),
                   types: dict | None = None) -> Callable[[], AnswerStep]:
    """The answer step of ``docq ask`` (a ``pipeline.Answerer``), made on first need: a
    callable that loads the model, so nothing loads when the output already holds every pair.

    ``open_backend()`` loads the model and returns (backend, visual scorer or None); ``answer``
    holds the answering flags (prompt, max new tokens, batch size, date order, max images);
    ``types`` maps question ids to the types the question file gives."""

    def make() -> AnswerStep:
        from docvqa_cli import pipeline, prompts

        template = prompts.load(answer.prompt)  # a bad --prompt fails before the model loads
        backend, visual = open_backend()
        return pipeline.Answerer.build(backend, answer, visual, types, template)

    return make
