"""Find an answer's words on the page and return their boxes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from docvqa_cli.documents import Page

_NORM = re.compile(r"[^0-9a-z]+")


@dataclass
class Match:
    page: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    score: float = 0.0


def _norm(text: str) -> str:
    return _NORM.sub("", text.lower())


def find_all(text: str, pages: list[Page]) -> list[Match]:
    target = _norm(text)
    matches = []
    if not target:
        return matches
    for p in pages:
        for i, w in enumerate(p.words):
            if _norm(w.text) == target:
                matches.append(Match(p.number, [w.box], 1.0))
    return matches


def locate(answer: str, pages: list[Page], kept=None, model_boxes=None) -> Match | None:
    found = find_all(answer, pages)
    return found[0] if found else None
