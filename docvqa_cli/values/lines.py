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
    x0, y0, x1, y1 = zip(*boxes)
    return (min(x0), min(y0), max(x1), max(y1))


def group_lines(words: Sequence) -> list[Line]:
    """The text lines of ``words`` (objects with ``text``, ``x0``..``y1`` and ``line``)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(words):
        groups.setdefault(w.line, []).append(i)
    lines = []
    for idx in groups.values():
        idx.sort(key=lambda i: words[i].x0)
        ws = tuple(words[i] for i in idx)
        texts = [w.text for w in ws]
        spans, pos = [], 0
        for t in texts:
            spans.append((pos, pos + len(t)))
            pos += len(t) + 1
        lines.append(Line(tuple(idx), ws, " ".join(texts), tuple(spans),
                          (min(w.x0 for w in ws), min(w.y0 for w in ws), max(w.x1 for w in ws), max(w.y1 for w in ws))))
    lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
    return lines
