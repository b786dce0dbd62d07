"""Relevance of each tile to a question, and the selection of the tiles to keep."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from docvqa_cli.tiles import Tile

_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass
class TileScore:
    tile: Tile
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    kept: bool = False


def _terms(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


def score(question: str, tiles: list[Tile], visual=None) -> list[TileScore]:
    q = _terms(question)
    out = []
    for t in tiles:
        lex = len(q & _terms(t.text)) / max(1, len(q))
        out.append(TileScore(t, lex, {"lexical": lex}))
    return out


def select(scores: list[TileScore], keep: float = 0.5) -> list[TileScore]:
    """Mark and return the kept tiles (at least one), in document order."""
    budget = max(1, math.ceil(keep * len(scores) - 1e-9))
    order = sorted(scores, key=lambda s: (-s.score, s.tile.key))
    for s in order[:budget]:
        s.kept = True
    return sorted(order[:budget], key=lambda s: s.tile.key)
