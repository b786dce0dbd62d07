"""The whole flow for one document and its questions (ARCHITECTURE.md, "The data flow").

Per document, once: the pages (already loaded by the caller), their tiles at the backend's
tile size, and each page's overview (made the first time a question needs it). Per
question: score the tiles, keep the relevant fraction, show the model one ``PageView`` for
each page that has kept tiles (its overview plus its kept tiles; a page with no kept tile is
not shown at all, so a long document costs one overview per page the question touches, not
per page), answer, find the answer's words on the page, and build the record.

Batching: the questions are scored and their views built one by one (cheap, on the CPU),
then answered ``batch_size`` at a time by ``backend.answer_batch`` (one padded forward; the
same greedy answers as one at a time). ``answer_pairs`` does the same for questions of
several documents at once (batch mode): a ``Job`` carries its document's pages and, shared
by all the jobs of one document, its tiles (``document_tiles``) and overview cache. A
record's ``seconds`` is its own scoring and grounding time plus an equal share of its
batch's model time. If a batch fails as a whole, its questions are retried one at a time,
so a failure stays with the question that caused it; a question that runs out of GPU
memory alone is retried with fewer tiles (``OOM_RETRY_FACTORS`` of ``keep``). Every retry
runs after the failed call's exception is gone (so its tensors are freed) and after
``free_device_memory``.

``max_new_tokens=None`` takes the prompt's own ``# max_new_tokens:`` (``prompts.settings``),
else ``prompts.DEFAULT_MAX_NEW_TOKENS``. ``batch_size=None`` is 1 here; the commands pass
``vlm.load.default_batch_size(backend)`` (free GPU memory on CUDA, a small fixed number on
the CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from docvqa_cli import grounding, relevance, typed
from docvqa_cli.errors import OOM_RETRY_FACTORS, ErrorKind, free_device_memory, kind_of, one_line, oom_gave_up
from docvqa_cli.options import DEFAULT_KEEP, DEFAULT_MAX_IMAGES, AnswerOptions, ModelOptions
from docvqa_cli.reading import tiles
from docvqa_cli.reading.documents import Page
from docvqa_cli.reading.tiles import Tile
from docvqa_cli.records import Answer, boxes_of
from docvqa_cli.vlm.base import Backend, PageView



@dataclass
class Job:
    """One (document, question) pair. Jobs of one document share ``tiles`` and ``overviews``."""

    doc: str
    pages: list[Page]
    question_id: str
    question: str
    tiles: list[Tile] | None = None  # document_tiles(pages, backend); computed if None
    overviews: dict = field(default_factory=dict)  # page number -> overview image (filled as needed)
    kind: str | None = None  # the question's type (typed.TYPES); None: inferred from the question
    date_order: str | None = None  # --date-order: how an ambiguous date reads when the document does not say
    max_images: int = DEFAULT_MAX_IMAGES  # --max-images: images in this question's prompt (relevance.cap)


def document_tiles(pages: list[Page], backend: Backend) -> list[Tile]:
    """All tiles of a document at the backend's tile size (once per document)."""
    return [t for page in pages for t in tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)]


def open_backend(model: ModelOptions, visual: bool | None = None, questions: int | None = None):
    """Load the model once (with TIE adapters if ``model.tie``) and set its decode loop (for a
    run of ``questions`` questions, if known: ``resolve_decode``); return (backend, visual
    scorer or None). The visual scorer is on with TIE unless ``visual`` is False."""
    from docvqa_cli.vlm.load import load_backend, resolve_decode

    name = model.model
    if model.tie and not name:  # the base model the adapters were trained on
        from docvqa_cli.vlm import tie

        name = tie.read_config(model.tie).base_model
    backend = load_backend(name, device=model.device, quant=model.quant, trust_remote_code=model.trust_remote_code,
                           dtype=model.dtype)
    backend.decode = resolve_decode(model.decode, backend.device, questions)
    if model.tie:
        from docvqa_cli.vlm.tie import use_tie

        backend = use_tie(backend, model.tie)
    scorer = None
    if visual if visual is not None else bool(model.tie):
        from docvqa_cli.vlm.visual import visual_scorer

        scorer = visual_scorer(backend)
    return backend, scorer


def batch_size_for(backend, max_new_tokens: int, batch_size: int | None = None) -> int:
    """``--batch-size`` if given, else what the device affords (``load.default_batch_size``)."""
    from docvqa_cli.vlm.load import default_batch_size

    return batch_size or default_batch_size(backend, max_new_tokens)


@dataclass(frozen=True)
class Answerer:
    """The answer step: a loaded model with everything a question needs besides its pages.

    ``answer`` answers questions about one document; ``answer_many`` answers the questions of
    several documents, ``batch_size`` to a forward across them (batch mode). ``build`` turns
    the command's ``AnswerOptions`` (``--prompt``, ``--max-new-tokens`` or None, ``--batch-size``
    or None, ``--date-order``, ``--max-images``) into the settled values; ``model_name`` is what
    records carry."""

    backend: Backend
    template: str  # a prompt template text (``prompts.load``)
    max_new_tokens: int
    batch_size: int = 1
    visual: object = None  # the backend's visual relevance scorer, or None
    types: dict | None = None  # question id -> its type (typed.TYPES); a question not in it: inferred
    date_order: str | None = None  # --date-order for dates the document does not settle
    max_images: int = DEFAULT_MAX_IMAGES  # --max-images: images in one question's prompt

    @classmethod
    def build(cls, backend: Backend, answer: AnswerOptions = AnswerOptions(), visual=None,
              types: dict | None = None, template: str | None = None) -> "Answerer":
        """``template``: the prompt's text, when the caller has loaded it already (else
        ``answer.prompt`` is loaded here)."""
        from docvqa_cli import prompts

        template = template if template is not None else prompts.load(answer.prompt)
        tokens = prompts.max_new_tokens(template, answer.max_new_tokens)
        return cls(backend, template, tokens, batch_size_for(backend, tokens, answer.batch_size), visual, types,
                   answer.date_order, answer.max_images)

    @property
    def model_name(self) -> str:
        return self.backend.name

    def answer(self, pages: list[Page], questions: Iterable[tuple[str, str]], keep: float = DEFAULT_KEEP,
               doc: str | None = None) -> Iterator[Answer]:
        """One record per (question_id, question) about one document, in order."""
        doc = doc if doc is not None else (pages[0].doc if pages else "")
        jobs = self._jobs(doc, pages, questions, document_tiles(pages, self.backend), {})
        yield from answer_pairs(jobs, self.backend, keep=keep, prompt=self.template,
                                max_new_tokens=self.max_new_tokens, visual=self.visual, batch_size=self.batch_size)

    def _jobs(self, doc: str, pages: list[Page], questions: Iterable[tuple[str, str]], tiles_: list[Tile],
              overviews: dict) -> Iterator[Job]:
        """The jobs of one document's questions, sharing its tiles and overviews."""
        for qid, q in questions:
            yield Job(doc, pages, str(qid), q, tiles_, overviews, (self.types or {}).get(str(qid)), self.date_order,
                      self.max_images)

    def answer_many(self, items: list[tuple[str, list[Page], list[tuple[str, str]]]],
                    keep: float = DEFAULT_KEEP) -> list[list[Answer]]:
        """[(doc, pages, questions)] of several documents, answered ``batch_size`` questions
        to a forward across documents: a list of records per document, in order."""
        jobs = []
        for doc, pages, questions in items:
            jobs += self._jobs(doc, pages, questions, document_tiles(pages, self.backend), {})
        out: dict[int, list[Answer]] = {id(pages): [] for _, pages, _ in items}
        for job, record in zip(jobs, answer_pairs(jobs, self.backend, keep=keep, prompt=self.template,
                                                  max_new_tokens=self.max_new_tokens, visual=self.visual,
                                                  batch_size=self.batch_size)):
            out[id(job.pages)].append(record)
        return [out[id(pages)] for _, pages, _ in items]


def page_views(pages: list[Page], kept: list[Tile], overviews: dict[int, object], overview_px: int) -> list[PageView]:
    """One view per page with kept tiles, in page order; overviews are cached in ``overviews``."""
    views = []
    for page in pages:
        mine = [t for t in kept if t.page is page]
        if not mine:
            continue
        if page.number not in overviews:
            overviews[page.number] = tiles.overview(page, max_px=overview_px)
        views.append(PageView(page, overviews[page.number], sorted(mine, key=lambda t: t.index)))
    return views


def answer_questions(
    pages: list[Page],
    questions: Iterable[tuple[str, str]],
    backend: Backend,
    keep: float = DEFAULT_KEEP,
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    doc: str | None = None,
    visual=None,
    batch_size: int | None = None,
    types: dict | None = None,
    date_order: str | None = None,
) -> Iterator[Answer]:
    """One record per (question_id, question), in order. ``prompt`` is a template text
    (``prompts.load``); ``doc`` is the path as the user gave it (default: the pages' doc);
    ``visual`` is the backend's visual relevance scorer for ``relevance.score``, if any;
    ``batch_size`` questions are answered in one forward (None: 1); ``types`` maps a question
    id to its type (others: ``relevance.infer_type``), ``date_order`` is ``--date-order``."""
    doc = doc if doc is not None else (pages[0].doc if pages else "")
    shared_tiles = document_tiles(pages, backend)
    overviews: dict[int, object] = {}
    types = types or {}
    jobs = (Job(doc, pages, str(qid), question, shared_tiles, overviews, types.get(str(qid)), date_order)
            for qid, question in questions)
    yield from answer_pairs(jobs, backend, keep=keep, prompt=prompt, max_new_tokens=max_new_tokens,
                            visual=visual, batch_size=batch_size)


@dataclass
class _Prepared:
    job: Job
    record: Answer
    start: float
    kept: list[Tile] = field(default_factory=list)
    views: list[PageView] = field(default_factory=list)
    own: float = 0.0  # seconds spent on this question outside the model


def _prepare(job: Job, backend: Backend, keep: float, visual) -> _Prepared:
    start = time.perf_counter()
    if job.tiles is None:
        job.tiles = document_tiles(job.pages, backend)
    record = Answer(doc=job.doc, question_id=str(job.question_id), question=job.question,
                    tiles_total=len(job.tiles), model=backend.name)
    record.type = job.kind or relevance.infer_type(job.question)
    prep = _Prepared(job, record, start)
    try:
        scores = relevance.score(job.question, job.tiles, visual=visual)
        # The memory budget: at most job.max_images images (--max-images), best pages first.
        prep.kept = [s.tile for s in relevance.cap(relevance.select(scores, keep), job.max_images)]
        prep.views = page_views(job.pages, prep.kept, job.overviews, backend.tile_px)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        record.error, record.failure = one_line(exc), kind_of(exc)
    prep.own = time.perf_counter() - start
    return prep


def _finish(prep: _Prepared, generation, model_seconds: float) -> Answer:
    record = prep.record
    start = time.perf_counter()
    try:
        match = grounding.locate(generation.text, prep.job.pages, kept=prep.kept, model_boxes=generation.boxes)
        record.answer = generation.text
        record.confidence = None if generation.confidence is None else round(generation.confidence, 4)
        views = prep.views
        record.page = match.page if match else (views[0].page.number if len(views) == 1 else None)
        record.boxes = boxes_of(match)
        record.tiles_kept = len(prep.kept)
        try:
            record.set_typed(typed.read_typed(record.type, generation.text, match, prep.job.pages,
                                              prep.job.date_order))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # the answer stands; only its value is unread
            record.value_note = f"value not read: {one_line(exc)}"
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        record.error, record.failure = one_line(exc), kind_of(exc)
    record.seconds = round(prep.own + model_seconds + time.perf_counter() - start, 3)
    return record


def _attempt(call):
    """(result, None) or (None, (one-line error, whether out of memory)). The exception is
    dropped before this returns, and with it the failed call's frames and tensors."""
    try:
        return call(), None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        kind = kind_of(exc)
        return None, (one_line(exc), kind is ErrorKind.out_of_memory, kind)


def _answer_alone(prep: _Prepared, backend: Backend, template: str, max_new_tokens: int, keep: float, visual,
                  failure=None):
    """One question on its own: (generation or None, (error, ErrorKind) or None, the prep used); out of
    memory, retried with ``OOM_RETRY_FACTORS`` of ``keep`` (a new selection of fewer tiles).
    ``failure``: how its own first attempt failed already, if it did (then not run again)."""
    gen = None
    if failure is None:
        gen, failure = _attempt(lambda: backend.answer(prep.job.question, prep.views, template, max_new_tokens))
    for factor in OOM_RETRY_FACTORS:
        if failure is None or not failure[1]:
            break
        free_device_memory()
        smaller = _prepare(prep.job, backend, keep * factor, visual)
        if smaller.record.error is not None:
            break
        smaller.start = prep.start
        smaller.own += prep.own
        gen, again = _attempt(lambda: backend.answer(smaller.job.question, smaller.views, template, max_new_tokens))
        if again is None:
            return gen, None, smaller
        failure = again
    if failure is None:
        return gen, None, prep
    message, oom, kind = failure
    if oom:
        free_device_memory()
        message = oom_gave_up(message, keep)
    return None, (message, kind), prep


def _answer_group(group: list[_Prepared], backend: Backend, template: str, max_new_tokens: int,
                  keep: float = DEFAULT_KEEP, visual=None) -> list[Answer]:
    """Answer the prepared questions of one batch; records in order."""
    ready = [p for p in group if p.record.error is None]
    results: dict[int, tuple] = {}  # id(prep) -> (generation or None, error or None, prep used, seconds)
    if ready:
        t0 = time.perf_counter()
        gens, failure = _attempt(lambda: backend.answer_batch([(p.job.question, p.views) for p in ready],
                                                              template, max_new_tokens))
        if failure is None:
            share = (time.perf_counter() - t0) / len(ready)
            for p, g in zip(ready, gens):
                results[id(p)] = (g, None, p, share)
        elif len(ready) == 1:  # its own failure: on out of memory, fewer tiles
            gen, error, used = _answer_alone(ready[0], backend, template, max_new_tokens, keep, visual, failure)
            results[id(ready[0])] = (gen, error, used, time.perf_counter() - t0)
        else:  # one at a time, so the failure stays with its question
            if failure[1]:
                free_device_memory()
            for p in ready:
                t1 = time.perf_counter()
                gen, error, used = _answer_alone(p, backend, template, max_new_tokens, keep, visual)
                results[id(p)] = (gen, error, used, time.perf_counter() - t1)
    out = []
    for p in group:
        gen, error, used, seconds = results.get(id(p), (None, None, p, 0.0))
        if gen is not None:
            out.append(_finish(used, gen, seconds))
            continue
        if error is not None:
            p.record.error, p.record.failure = error
        p.record.seconds = round(p.own + seconds, 3)
        out.append(p.record)
    return out


def answer_pairs(
    jobs: Iterable[Job],
    backend: Backend,
    keep: float = DEFAULT_KEEP,
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    visual=None,
    batch_size: int | None = None,
) -> Iterator[Answer]:
    """One record per job, in order, ``batch_size`` jobs (of any documents) per forward.

    Records come out a batch at a time; a caller that writes them as they come (resume)
    loses at most one batch on an interrupt."""
    from docvqa_cli import prompts

    template = prompt if prompt is not None else prompts.load(prompts.DEFAULT)
    max_new_tokens = prompts.max_new_tokens(template, max_new_tokens)
    size = max(1, int(batch_size or 1))
    group: list[_Prepared] = []
    for job in jobs:
        group.append(_prepare(job, backend, keep, visual))
        if len(group) >= size:
            yield from _answer_group(group, backend, template, max_new_tokens, keep, visual)
            group = []
    if group:
        yield from _answer_group(group, backend, template, max_new_tokens, keep, visual)
