"""A page as grounding reads it, once per page: its text lines in reading order, the lines
text flows on to, their letters and digits (``norm_text``) in one string to search in C, and,
on demand, the values printed on each line (``docvqa_cli.values``).

``index(page)`` returns the cached ``PageIndex`` of a page. ``PageIndex.starts_for`` gives
the words where a span close to an answer may start (a pigeonhole filter on pieces of the
answer), ``PageIndex.values_near`` the values printed on lines that may hold a given value.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

from docvqa_cli import values
from docvqa_cli.reading.documents import Page, Word

Box = tuple[float, float, float, float]


@functools.lru_cache(maxsize=65536)
def norm_text(text: str) -> str:
    """Lower case letters and digits only, accents removed: ``"Café, Ltd."`` -> ``"cafeltd"``."""
    if text.isascii():
        return _NOT_ALNUM.sub("", text.lower())
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in text if ch.isalnum() and not unicodedata.combining(ch))


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass
class Line:
    words: list[Word]
    norms: list[str]  # norm_text of each word
    box: Box
    next: list[int] = field(default_factory=list)  # indices of the lines text may flow on to


@dataclass
class Occurrence:
    """A value printed on a page: the words that print it, and whether it fills them."""

    line: int
    first: int  # word positions in the line, inclusive
    last: int
    value: values.Value
    text: str  # the characters that print the value
    whole: bool  # nothing but the value (and punctuation) in its words


class PageIndex:
    """A page's lines (with the lines text flows on to) and, on demand, its values.

    ``flat`` is the page's letters and digits in line order, ``starts`` the offset of each
    line in it, and ``prev`` the lines that flow into each line: an answer's pieces found in
    ``flat`` (C speed) point at the few lines where a span may start.
    """

    def __init__(self, page: Page):
        self.page = page
        self.lines = _lines(page)
        self.starts: list[int] = []
        parts, pos = [], 0
        for ln in self.lines:
            self.starts.append(pos)
            text = "".join(ln.norms)
            parts.append(text)
            pos += len(text)
        self.flat = "".join(parts)
        self.offsets: list[list[int]] = []  # per line, where each word starts in its text
        self.lengths: list[int] = []
        for ln in self.lines:
            offs, pos = [], 0
            for t in ln.norms:
                offs.append(pos)
                pos += len(t)
            self.offsets.append(offs)
            self.lengths.append(pos)
        self.by_norm: dict[str, list[tuple[int, int]]] = {}  # a word's letters -> (line, word)
        for li, ln in enumerate(self.lines):
            for wi, t in enumerate(ln.norms):
                if t:
                    self.by_norm.setdefault(t, []).append((li, wi))
        self.prev: list[list[int]] = [[] for _ in self.lines]
        for i, ln in enumerate(self.lines):
            for j in ln.next:
                self.prev[j].append(i)
        self._values: dict[int, list[Occurrence]] = {}

    def values_near(self, wanted: Iterable[str]) -> Iterable[Occurrence]:
        """The values printed on the lines whose letters and digits hold one of ``anchors``
        (what any printing of the wanted value must hold; see ``anchors``), read once a line."""
        lines: set[int] = set()
        for anchor in wanted:
            pos = self.flat.find(anchor)
            while pos != -1:
                li = bisect.bisect_right(self.starts, pos) - 1
                lines.add(li)
                pos = self.flat.find(anchor, self.starts[li] + self.lengths[li])
        for li in sorted(lines):
            occs = self._values.get(li)
            if occs is None:
                occs = self._values[li] = list(_occurrences(li, self.lines[li]))
            yield from occs

    def starts_for(self, key: str, d: int, jumps: int = 4) -> Iterable[tuple[int, int]]:
        """(line, word) where a span within ``d`` edits of ``key`` may start.

        A span runs over at most ``jumps`` line changes (at most ``MAX_JUMPS``, and fewer
        than the answer has words), so of ``d + jumps + 1`` pieces of the key one is printed
        intact within one line. Where a piece is found, the
        span starts about as many characters before it as the piece lies into the key: on
        the same line, or on a line that flows into it."""
        if d == 0:  # the first word is a prefix of the key
            return [pos for n in range(1, len(key) + 1) for pos in self.by_norm.get(key[:n], ())]
        jumps = min(jumps, MAX_JUMPS)
        n_pieces = d + jumps + 1
        if len(key) < 2 * n_pieces:  # pieces too short to narrow anything down: any word
            # that is close to the start of the key (each distinct word tested once)
            head = set(key[:2 * d + 1])
            return sorted(pos for norm, where in self.by_norm.items()
                          if (len(norm) <= d or not head.isdisjoint(norm[:2 * d + 1])) and starts_key(norm, key, d)
                          for pos in where)
        size = len(key) / n_pieces
        found: set[tuple[int, int]] = set()
        flat, starts = self.flat, self.starts
        for k in range(n_pieces):
            o = round(k * size)
            piece = key[o:round((k + 1) * size)]
            pos = flat.find(piece)
            while pos != -1:
                li = bisect.bisect_right(starts, pos) - 1
                self._aligned(li, pos - starts[li] - o, d, found, jumps)
                pos = flat.find(piece, pos + 1)
        return sorted(found)

    def _aligned(self, li: int, at: int, d: int, found: set, jumps: int) -> None:
        """Words of line ``li`` that start within ``d`` characters of offset ``at`` (negative:
        that many characters back, on the lines that flow into it)."""
        offs = self.offsets[li]
        if at + d >= 0:
            lo = max(0, bisect.bisect_right(offs, at - d) - 1)  # the word holding at - d
            hi = bisect.bisect_right(offs, at + d)
            for wi in range(lo, hi):
                found.add((li, wi))
        if at - d < 0 and jumps:
            for p in self.prev[li]:
                self._aligned(p, self.lengths[p] + at, d, found, jumps - 1)


MAX_JUMPS = 4  # line changes within one span


_CACHE: dict[int, tuple[Page, int, PageIndex]] = {}


def index(page: Page) -> PageIndex:
    hit = _CACHE.get(id(page))
    if hit is not None and hit[0] is page and hit[1] == len(page.words):
        return hit[2]
    ix = PageIndex(page)
    if len(_CACHE) >= 256:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(page)] = (page, len(page.words), ix)
    return ix


def _lines(page: Page) -> list[Line]:
    lines = [Line(list(ln.words), [norm_text(w.text) for w in ln.words], ln.box)
             for ln in values.group_lines(page.words)]
    # lines are sorted by top edge: the candidates for "right" and "below" of a line lie in a
    # window of tops around it, found by walking from its position
    for i, a in enumerate(lines):
        ax0, ay0, ax1, ay1 = a.box
        h = max(ay1 - ay0, 1e-6)
        right, below = [], []
        for j in _near(lines, i):
            b = lines[j]
            bx0, by0, bx1, by1 = b.box
            bh = max(by1 - by0, 1e-6)
            v_overlap = min(ay1, by1) - max(ay0, by0)
            if v_overlap >= 0.5 * min(h, bh) and bx0 >= ax1 - 0.5 * h and bx0 - ax1 <= 2.5 * h:
                right.append((bx0 - ax1, j))  # the rest of the same printed line
            elif (
                by0 + by1 > ay0 + ay1  # lower down
                and v_overlap < 0.5 * min(h, bh)
                and by0 - ay1 <= 1.2 * max(h, bh)
                and min(ax1, bx1) > max(ax0, bx0)
            ):
                below.append((by0 - ay1, abs(bx0 - ax0), j))  # the next line of a block
        below.sort()
        # the next line of the block: the nearest below (or its pieces, where OCR cut it),
        # never one further down past it
        below = [b for b in below if b[0] <= below[0][0] + 0.5 * h][:2]
        a.next = [j for _, j in sorted(right)[:1]] + [j for *_, j in below]
    return lines


def _near(lines: list[Line], i: int) -> Iterable[int]:
    """Lines whose top is within reach of line ``i`` (same row, or the next rows down)."""
    ay0, ay1 = lines[i].box[1], lines[i].box[3]
    h = max(ay1 - ay0, 1e-6)
    j = i - 1
    while j >= 0 and lines[j].box[1] >= ay0 - 4 * h:
        if lines[j].box[3] > ay0:  # may overlap this row
            yield j
        j -= 1
    j = i + 1
    while j < len(lines) and lines[j].box[1] <= ay1 + 4 * h:
        yield j
        j += 1


def union(boxes: Iterable[Sequence[float]]) -> Box:
    return values.lines.union(boxes)


def line_boxes(words: Sequence[Word]) -> list[Box]:
    """One box per printed line of ``words``: words on one row share a box."""
    rows: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.cy, w.x0)):
        for row in rows:
            top, bottom = min(x.y0 for x in row), max(x.y1 for x in row)
            if min(bottom, w.y1) - max(top, w.y0) >= 0.5 * min(bottom - top, w.y1 - w.y0):
                row.append(w)
                break
        else:
            rows.append([w])
    return [union(x.box for x in row) for row in rows]


def _occurrences(li: int, ln: Line) -> Iterable[Occurrence]:
    """Every value printed on a line (see ``values.find_values``), and amounts that OCR or
    the text layer cut into words (``"1 007,50"``, ``"RM 9 .00"``)."""
    text = " ".join(w.text for w in ln.words)
    spans, pos = [], 0
    for w in ln.words:
        spans.append((pos, pos + len(w.text)))
        pos += len(w.text) + 1
    seen = set()
    for f in values.find_values(text):
        ks = [k for k, (a, b) in enumerate(spans) if a < f.end and b > f.start]
        if not ks:
            continue
        a, b = spans[ks[0]][0], spans[ks[-1]][1]
        outside = text[a:f.start] + text[f.end:b]
        whole = not any(ch.isalnum() for ch in outside)
        seen.add((ks[0], ks[-1]))
        yield Occurrence(li, ks[0], ks[-1], f.value, text[f.start:f.end], whole)
    # numbers cut into two or three words by spaces that group thousands
    for k in range(len(ln.words) - 1):
        if not ln.words[k].text[-1:].isdigit() and ln.words[k].text[-1:] not in ".,":
            continue
        for n in (2, 3):
            if k + n > len(ln.words) or (k, k + n - 1) in seen:
                continue
            ws = ln.words[k:k + n]
            if not _glued(ws):
                break
            joined = " ".join(w.text for w in ws)
            v = values.parse_amount(joined)
            if v is not None:
                yield Occurrence(li, k, k + n - 1, v, joined, True)


def _glued(words: Sequence[Word]) -> bool:
    """Whether words next to each other on a line may print one number between them."""
    for a, b in zip(words, words[1:]):
        gap = b.x0 - a.x1
        char_w = (a.x1 - a.x0) / max(len(a.text), 1)
        glued = a.text[-1:] in ".," or b.text[:1] in ".," or gap < 0.4 * char_w
        group = re.fullmatch(r"\d{3}(?:[.,]\d{1,2})?[^\d]?", b.text) and re.search(r"\d{1,3}$", a.text)
        if not (glued or group):
            return False
    return True


def anchors(value: values.Value) -> set[str]:
    """Strings that every printing of ``value`` holds among its letters and digits: the
    whole part of a number, the last two digits of a date's year, a duration's count in
    digits or in words, an id's characters."""
    kind = value.kind
    if kind in ("amount", "number"):
        out = {str(int(abs(r))) for r in value.readings}
        if kind == "number" and value.text.strip().isdigit():
            out.add(value.text.strip())  # an id printed as a number ("0012")
        return out
    if kind == "percent":
        return {str(int(abs(value.value)))}
    if kind == "date":
        return {c[2:4] for c in value.candidates}
    if kind == "time":
        h = int(value.iso[:2])
        return {str(h), f"{h:02d}", str(h % 12 or 12)}
    if kind == "duration":
        n = int(value.count)
        return {str(n)} | ({_number_words(n)} if n < 100 else set())
    return {norm_text(value.text)} if norm_text(value.text) else {""}


def _number_words(n: int) -> str:
    """``30`` -> ``"thirty"``, ``24`` -> ``"twentyfour"`` (letters only, as norm_text has them)."""
    words = {v: k for k, v in values.NUMBER_WORDS.items() if k not in ("a", "an", "single")}
    if n in words:
        return words[n]
    return words[n - n % 10] + words[n % 10]


def starts_key(word: str, key: str, d: int) -> bool:
    """Whether ``word`` is within ``d`` edits of some prefix of ``key`` (the first word of a
    span must be)."""
    m = len(word)
    if m > len(key) + d:
        return False
    return any(Levenshtein.distance(word, key[:n], score_cutoff=d) <= d
               for n in range(max(1, m - d), min(len(key), m + d) + 1))
