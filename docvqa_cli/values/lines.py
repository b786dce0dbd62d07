"""The one line grouper: a page's words as text lines.

Words carry the engine's line number (text layer or OCR); the words of one number form a
line, left to right, and lines run top to bottom. ``Line.text`` joins the words with one
space and ``Line.spans`` gives each word's characters in it, so a value found in the text
maps back to its words (``Line.words_in``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Line:
    indices: tuple[int, ...]  # the words' indices in the page's word list, left to right
    words: tuple  # the Word objects, left to right
    text: str
    spans: tuple[tuple[int, int], ...]  # per word, its (start, end) in ``text``
    box: Box

    def words_in(self, start: int, end: int) -> tuple[int, ...]:
        """Positions (in this line) of the words that characters ``start:end`` touch."""
        return tuple(k for k, (a, b) in enumerate(self.spans) if a < end and b > start)


def union(boxes) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def group_lines(words: Sequence) -> list[Line]:
    """The text lines of ``words`` (objects with ``text``, ``x0``..``y1`` and ``line``)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(words):
        groups.setdefault(w.line, []).append(i)
    lines = []
    for idx in groups.values():
        idx.sort(key=lambda i: words[i].x0)
        ws = tuple(words[i] for i in idx)
        spans, pos = [], 0
        for w in ws:
            spans.append((pos, pos + len(w.text)))
            pos += len(w.text) + 1
        lines.append(Line(tuple(idx), ws, " ".join(w.text for w in ws), tuple(spans),
                          union((w.x0, w.y0, w.x1, w.y1) for w in ws)))
    lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
    return lines
