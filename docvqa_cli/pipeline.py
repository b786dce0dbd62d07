"""The whole flow for one document and its questions (DESIGN.md, "Data flow").

Per document, once: the pages (already loaded by the caller), their tiles at the backend's
tile size, and each page's overview (made the first time a question needs it). Per
question: score the tiles, keep the relevant fraction, show the model one ``PageView`` for
each page that has kept tiles (its overview plus its kept tiles; a page with no kept tile is
not shown at all, so a long document costs one overview per page the question touches, not
per page), answer, find the answer's words on the page, and build the record.

A question that fails becomes a record with ``error`` set; the others go on.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from docvqa_cli import grounding, relevance, tiles
from docvqa_cli.documents import Page
from docvqa_cli.records import Answer, boxes_of
from docvqa_cli.tiles import Tile
from docvqa_cli.vlm.base import Backend, PageView

DEFAULT_KEEP = 0.5
DEFAULT_MAX_NEW_TOKENS = 32


def open_backend(model, device, quant, trust_remote_code, tie_dir, use_visual):
    """Load the model once (with TIE adapters if given); return (backend, visual scorer or None)."""
    from docvqa_cli.vlm.load import load_backend

    backend = load_backend(model, device=device, quant=quant, trust_remote_code=trust_remote_code)
    if tie_dir:
        from docvqa_cli import tune as tune_mod

        backend = tune_mod.use_tie(backend, tie_dir)
    visual = None
    if use_visual if use_visual is not None else bool(tie_dir):
        from docvqa_cli import tune as tune_mod

        visual = tune_mod.visual_scorer(backend)
    return backend, visual


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def answer_questions(
    pages: list[Page],
    questions: Iterable[tuple[str, str]],
    backend: Backend,
    keep: float = DEFAULT_KEEP,
    prompt: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    doc: str | None = None,
    visual=None,
) -> Iterator[Answer]:
    """One record per (question_id, question), in order. ``prompt`` is a template text
    (``prompts.load``); ``doc`` is the path as the user gave it (default: the pages' doc);
    ``visual`` is the backend's visual relevance scorer for ``relevance.score``, if any."""
    from docvqa_cli import prompts

    template = prompt if prompt is not None else prompts.load(prompts.DEFAULT)
    doc = doc if doc is not None else (pages[0].doc if pages else "")
    all_tiles = [t for page in pages for t in tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)]
    overviews: dict[int, object] = {}
    for qid, question in questions:
        start = time.perf_counter()
        record = Answer(doc=doc, question_id=str(qid), question=question, tiles_total=len(all_tiles),
                        model=backend.name)
        try:
            scores = relevance.score(question, all_tiles, visual=visual)
            kept = [s.tile for s in relevance.select(scores, keep)]
            views = page_views(pages, kept, overviews, backend.tile_px)
            generation = backend.answer(question, views, template, max_new_tokens)
            match = grounding.locate(generation.text, pages, kept=kept, model_boxes=generation.boxes)
            record.answer = generation.text
            record.confidence = None if generation.confidence is None else round(generation.confidence, 4)
            record.page = match.page if match else (views[0].page.number if len(views) == 1 else None)
            record.boxes = boxes_of(match)
            record.tiles_kept = len(kept)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failed question must not stop the others
            record.error = _one_line(exc)
        record.seconds = round(time.perf_counter() - start, 3)
        yield record
