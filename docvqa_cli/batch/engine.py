"""The engine contract of a batch job: what an engine is given and what it gives back, the
answer step as batch sees it, the failed record, and the job's ``Summary``. See
ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from docvqa_cli import records
from docvqa_cli.batch.questions import Question

ERROR_LIMIT = 200  # characters of an exception's message kept in an error record

# The answer step as batch sees it: pages of one document, its pending (id, question)
# pairs and a keep ratio in, one record per question out (in any order).
AnswerFn = Callable[[list, list[tuple[str, str]], float], Iterable[records.Answer]]


# An engine runs the pending work: ``(todo, keep, stop)`` in, where ``todo`` is ``plan``'s
# list of (document, its pending questions) and ``stop.flag`` turns true on Ctrl-C; out, per
# document, ``(doc, its records)``, documents in any order, each document's records
# together. ``run`` writes them, counts them, shows progress and annotates: the same for
# every engine (``local.local_engine`` in this process, ``ray.RayEngine`` on a Ray cluster).
Engine = Callable[[list, float, object], Iterator[tuple[str, Iterable[records.Answer]]]]


def failed_record(doc: str, q: Question, message: str, model_name: str | None) -> records.Answer:
    return records.Answer(doc=doc, question_id=q.id, question=q.text, model=model_name, error=message)


@dataclass
class Summary:
    documents: int = 0  # documents in the job
    documents_done: int = 0  # documents answered (or failed) in this run
    answered: int = 0  # records without error written in this run
    errors: int = 0  # records with an error written in this run
    skipped: int = 0  # pairs already in the output
    skipped_errors: int = 0  # of those, records that carry an error
    seconds: float = 0.0
    tiles_kept: int = 0
    tiles_total: int = 0
    interrupted: bool = False
    repaired_bytes: int = 0

    @property
    def job_has_errors(self) -> bool:
        return bool(self.errors or self.skipped_errors)

    def line(self) -> str:
        rate = self.documents_done / self.seconds if self.seconds > 0 else 0.0
        tiles = (
            f"tiles encoded {self.tiles_kept} of {self.tiles_total} ({100 * self.tiles_kept / self.tiles_total:.0f}%)"
            if self.tiles_total else "tiles encoded 0"
        )
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (
            f"batch: {self.answered} answered, {self.errors} errors{skipped}; "
            f"{self.documents_done} of {self.documents} documents in {self.seconds:.1f} s "
            f"({rate:.2f} docs/s); {tiles}"
        )


def model_answerer(open_backend: Callable[[], tuple], prompt: str | None,
                   max_new_tokens: int | None, batch_size: int | None = None) -> Callable[[], AnswerFn]:
    """The answer step of ``docq ask`` (``pipeline.answer_questions``), loaded on first need.

    ``open_backend()`` loads the model and returns (backend, visual scorer or None)."""

    def make() -> AnswerFn:
        from docvqa_cli import pipeline, prompts

        template = prompts.load(prompt)
        backend, visual = open_backend()
        tokens = prompts.max_new_tokens(template, max_new_tokens)
        size = pipeline.batch_size_for(backend, tokens, batch_size)

        def answer(pages, questions, keep):
            return pipeline.answer_questions(pages, questions, backend, keep=keep, prompt=template,
                                             max_new_tokens=tokens, visual=visual, batch_size=size)

        def many(items, keep):
            """[(doc, pages, questions)] of several documents, answered ``size`` questions to a
            forward across documents: a list of records per document, in order."""
            jobs = []
            for doc, pages, questions in items:
                tiles, overviews = pipeline.document_tiles(pages, backend), {}
                jobs += [pipeline.Job(doc, pages, str(qid), q, tiles, overviews) for qid, q in questions]
            out = {id(pages): [] for _, pages, _ in items}
            for job, record in zip(jobs, pipeline.answer_pairs(jobs, backend, keep=keep, prompt=template,
                                                               max_new_tokens=tokens, visual=visual,
                                                               batch_size=size)):
                out[id(job.pages)].append(record)
            return [out[id(pages)] for _, pages, _ in items]

        answer.many = many
        answer.batch_size = size

        answer.model_name = backend.name
        return answer

    return make
