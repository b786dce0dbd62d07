"""Find an answer's words on the page and return their boxes: the proof of an answer.

An answer is matched against spans of consecutive words. Text flows left to right along a
line, then on to the line just to its right on the same row (OCR often cuts one printed
line in two) or the line just below it, so an answer may run over several lines.
Two matchers find spans, and the best wins:

- text: case, accents, spaces and punctuation are ignored (``"BHD."`` = ``"bhd"``), with an
  edit-distance tolerance (``rapidfuzz``) for OCR slips in the words of longer answers
  (``"SDN BND"`` for ``"SDN BHD"``), but none for answers that are mostly digits;
- values: an answer that is one value (``values.parse``: an amount, a date, a number, a
  percentage, an id, a duration, a time) is found wherever the page prints the same value,
  however it is written: ``"1,007.50"`` = ``"1.007,50"`` = ``"EUR 1 007,50"``,
  ``319`` = ``"319.00"``, ``2017-12-31`` = ``31/12/2017`` = ``Dec 31, 2017``,
  ``"30 days"`` = ``"thirty (30) days"``.

No false proofs: every number, date, amount, id or duration in the answer must be printed
the same, value for value, in the span (``"60 days"`` is not ``"thirty (30) days"``,
``"Page 9 of 5"`` is not ``"Page 1 of 5"``, ``"-11.80"`` is not ``"11.80"``); only the
words around them may be fuzzy. An answer that is only partly on the page (``"It comes to
1,157.40 in all."``) gets no match, not a box on the part that is.

``locate`` prefers spans inside the kept tiles, then elsewhere on their pages, then other
pages, and uses boxes the model emitted (already in page points) only to choose between
spans the text found. A ``Match`` has one box per text line of the span, in page points.
A page's lines and values are read once and cached, so many answers over one document cost
little each (``benchmarks/grounding_speed.py``).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

from docvqa_cli import values
from docvqa_cli.documents import Page, Word

Box = tuple[float, float, float, float]

# Scores of the matchers (a Match's score is in [0, 1]).
EXACT = 1.0  # the same characters (case, spaces and punctuation around it aside)
SAME_LETTERS = 0.98  # the same letters and digits, other punctuation ("@1.75" for "1.75")
VALUE = 0.95  # the same value, written differently (amounts, numbers, ids, durations...)
AMOUNT = VALUE
DATE = 0.95  # same day, written differently
DATE_AMBIGUOUS = 0.85  # same day if day and month are read the other way round too
PART_OF_WORD = 0.9  # factor when the value is only part of a word ("Total:9.00")
MIN_FUZZY = 0.75  # lowest text similarity accepted (answers of 8+ letters and digits)
MAX_ANSWER = 2000  # characters of an answer worth looking for (a longer one is no span)

# Bonuses used by ``locate`` to rank (they never make a Match on their own).
KEPT_BONUS = 0.10
KEPT_PAGE_BONUS = 0.05
MODEL_BOX_BONUS = 0.10


@dataclass
class Match:
    page: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    score: float = 0.0
    words: list[Word] = field(default_factory=list, repr=False, compare=False)


# --- normalisation ------------------------------------------------------------------------

def norm_text(text: str) -> str:
    """Lower case letters and digits only, accents removed: ``"Café, Ltd."`` -> ``"cafeltd"``."""
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in text if ch.isalnum() and not unicodedata.combining(ch))


def _plain(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(_EDGE_PUNCT)


_EDGE_PUNCT = ".,;:!?*\"'()[]{}"
_DIGIT_RUNS = re.compile(r"\d+")
_CENTS = re.compile(r"\d\s?[.,]\s?\d{2}(?!\d)")
_FRACTION = re.compile(r"\d\s?[.,]\s?\d{1,2}(?!\d)")


def _runs(text: str) -> list[str]:
    """The digit runs of a text, as digits (``"Page 1 of 25"`` -> ``["1", "25"]``)."""
    return _DIGIT_RUNS.findall(unicodedata.normalize("NFKC", text))


# --- the page, read once ----------------------------------------------------------------------

@dataclass
class _Line:
    words: list[Word]
    norms: list[str]  # norm_text of each word
    box: Box
    next: list[int] = field(default_factory=list)  # indices of the lines text may flow on to


@dataclass
class _Occurrence:
    """A value printed on a page: the words that print it, and whether it fills them."""

    line: int
    first: int  # word positions in the line, inclusive
    last: int
    value: values.Value
    text: str  # the characters that print the value
    whole: bool  # nothing but the value (and punctuation) in its words


class _PageIndex:
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
        self._by_key: dict | None = None

    def values_by_key(self) -> dict:
        if self._by_key is None:
            by_key: dict = {}
            for occ in _occurrences(self.lines):
                for key in occ.value.keys():
                    by_key.setdefault(key, []).append(occ)
            self._by_key = by_key
        return self._by_key

    def starts_for(self, key: str, d: int) -> Iterable[tuple[int, int]]:
        """(line, word) where a span within ``d`` edits of ``key`` may start.

        A span runs over at most ``MAX_JUMPS`` line changes, so of ``d + MAX_JUMPS + 1``
        pieces of the key one is printed intact within one line. Where a piece is found, the
        span starts about as many characters before it as the piece lies into the key: on
        the same line, or on a line that flows into it."""
        if d == 0:  # the first word is a prefix of the key
            return [pos for n in range(1, len(key) + 1) for pos in self.by_norm.get(key[:n], ())]
        n_pieces = d + MAX_JUMPS + 1
        if len(key) < 2 * n_pieces:  # pieces too short to narrow anything down: any word
            # that is close to the start of the key (each distinct word tested once)
            head = set(key[:2 * d + 1])
            return sorted(pos for norm, where in self.by_norm.items()
                          if (len(norm) <= d or not head.isdisjoint(norm[:2 * d + 1])) and _starts_key(norm, key, d)
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
                self._aligned(li, pos - starts[li] - o, d, found, MAX_JUMPS)
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


_CACHE: dict[int, tuple[Page, int, _PageIndex]] = {}


def _index(page: Page) -> _PageIndex:
    hit = _CACHE.get(id(page))
    if hit is not None and hit[0] is page and hit[1] == len(page.words):
        return hit[2]
    ix = _PageIndex(page)
    if len(_CACHE) >= 256:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(page)] = (page, len(page.words), ix)
    return ix


def _lines(page: Page) -> list[_Line]:
    lines = [_Line(list(ln.words), [norm_text(w.text) for w in ln.words], ln.box)
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
        a.next = [j for _, j in sorted(right)[:1]] + [j for *_, j in sorted(below)[:2]]
    return lines


def _near(lines: list[_Line], i: int) -> Iterable[int]:
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


def _union(boxes: Iterable[Sequence[float]]) -> Box:
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
    return [_union(x.box for x in row) for row in rows]


def _occurrences(lines: list[_Line]) -> Iterable[_Occurrence]:
    """Every value printed on the page's lines (see ``values.find_values``), and amounts
    that OCR or the text layer cut into words (``"1 007,50"``, ``"RM 9 .00"``)."""
    for li, ln in enumerate(lines):
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
            yield _Occurrence(li, ks[0], ks[-1], f.value, text[f.start:f.end], whole)
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
                    yield _Occurrence(li, k, k + n - 1, v, joined, True)


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


# --- matching ---------------------------------------------------------------------------------

@dataclass
class _Target:
    text: str
    key: str  # norm_text
    value: values.Value | None  # the one value the answer is, if it is one
    found: list  # the values printed in the answer
    runs: list[str]  # its digit runs
    cents: bool  # the answer prints a 2-digit fraction ("18.00")
    max_dist: int
    max_words: int


def _target(answer: str) -> _Target:
    key = norm_text(answer)
    n = len(key)
    max_dist = 0 if n < 5 else (1 if n < 8 else int(n * (1 - MIN_FUZZY)))
    if sum(ch.isdigit() for ch in key) * 2 >= n:
        max_dist = 0  # another digit is another value: numbers, dates and ids match exactly
    value = values.parse(answer)
    return _Target(
        text=answer,
        key=key,
        value=value,
        found=[f.value for f in values.find_values(answer)],
        runs=_runs(answer),
        cents=bool(_CENTS.search(answer)),
        max_dist=max_dist,
        max_words=2 * len(answer.split()) + 4,
    )


def _same_values(target: _Target, span_text: str) -> bool:
    """No false proof: the span prints the answer's numbers, dates, amounts, ids and
    durations, the same values in the same order, and no others."""
    found = [f.value for f in values.find_values(span_text)] if span_text else []
    if len(found) == len(target.found) and all(values.same_value(a, b) for a, b in zip(target.found, found)):
        return True
    # The same digits, grouped the same way, where OCR glued a word on ("81300SKUDAI"): only
    # for plain numbers and ids (amounts, dates and durations must read as the same value).
    strong = ("amount", "date", "duration", "percent", "time")
    return _runs(span_text) == target.runs and not any(v.kind in strong for v in target.found + found)


def _text_spans(ix: _PageIndex, target: _Target):
    """Spans (words, edit distance to the target) whose letters and digits are the answer's,
    up to ``max_dist`` edits."""
    key, d = target.key, target.max_dist
    if target.value is not None:
        d = 0  # a value matches exactly (written another way: the value matcher finds it)
        target = replace(target, max_dist=0)
    elif ix.page.source == "text" and d:
        # A text layer prints the characters themselves: no OCR slips to forgive, only a
        # model's small differences of spelling in longer answers (one edit in ten characters).
        d = min(d, len(key) // 10)
        target = replace(target, max_dist=d)
    lines = ix.lines
    for li, si in ix.starts_for(key, d):
        s = lines[li].norms[si]
        if not s or (d == 0 and not key.startswith(s)) or (d and not _starts_key(s, key, d)):
            continue
        yield from _extend(lines, li, si, [], "", target, 0)


def _starts_key(word: str, key: str, d: int) -> bool:
    """Whether ``word`` is within ``d`` edits of some prefix of ``key`` (the first word of a
    span must be)."""
    m = len(word)
    if m > len(key) + d:
        return False
    return any(Levenshtein.distance(word, key[:n], score_cutoff=d) <= d
               for n in range(max(1, m - d), min(len(key), m + d) + 1))


def _prefix_close(text: str, key: str, d: int) -> bool:
    """A cheap test that lets through every ``text`` within ``d`` edits of a prefix of
    ``key``: the prefix of its own length is then at most ``2 d`` away."""
    return Levenshtein.distance(text, key[:len(text)], score_cutoff=2 * d) <= 2 * d


def _extend(lines, li, si, span, text, target: _Target, depth):
    key, d = target.key, target.max_dist
    n = len(key)
    line = lines[li]
    for wi in range(si, len(line.words)):
        span = span + [line.words[wi]]
        text = text + line.norms[wi]
        if len(text) > n + d:
            return
        if d == 0:
            if text == key:
                yield span, 0
                return
            if not key.startswith(text):
                return
        else:
            dist = Levenshtein.distance(key, text, score_cutoff=d)
            if dist <= d:
                yield span, dist
            if not _prefix_close(text, key, d):
                return
        if len(span) >= target.max_words:
            return
    if depth < MAX_JUMPS:
        for nxt in line.next:
            yield from _extend(lines, nxt, 0, span, text, target, depth + 1)


def _text_score(target: _Target, span: list[Word], dist: int) -> float:
    text = " ".join(w.text for w in span)
    if not _same_values(target, text):
        return 0.0
    if dist == 0:
        return EXACT if _plain(text) == _plain(target.text) else SAME_LETTERS
    joined = "".join(norm_text(w.text) for w in span)
    score = 1.0 - dist / max(len(target.key), len(joined))
    return score if score >= MIN_FUZZY else 0.0


def _value_score(target: _Target, occ: _Occurrence, words: list[Word]) -> float:
    value, page_value = target.value, occ.value
    if target.cents and page_value.kind == "number" and not _FRACTION.search(occ.text):
        return 0.0  # an answer with cents ("18.00") is not the street number in "SAGU 18,"
    if value.kind == "amount" and page_value.kind == "amount" and value.currency and page_value.currency \
            and value.currency != page_value.currency:
        return 0.0  # EUR 10.00 is not USD 10.00
    text = " ".join(w.text for w in words)
    if _plain(text) == _plain(target.text):
        score = EXACT
    elif norm_text(text) == target.key and occ.whole:
        score = SAME_LETTERS
    elif value.kind == "date" and page_value.kind == "date":
        same = set(value.candidates) == set(page_value.candidates) or (
            len(value.candidates) == len(page_value.candidates) == 1)
        score = DATE if same else DATE_AMBIGUOUS
    else:
        score = VALUE
    return score if occ.whole else score * PART_OF_WORD


def _candidates(answer: str, pages: list[Page]) -> list[Match]:
    if not answer or len(answer) > MAX_ANSWER:
        return []
    target = _target(answer)
    if not target.key:
        return []
    found: list[Match] = []
    for page in pages:
        if not page.words:
            continue
        ix = _index(page)
        for span, dist in _text_spans(ix, target):
            score = _text_score(target, span, dist)
            if score > 0:
                found.append(Match(page.number, line_boxes(span), round(score, 4), list(span)))
        if target.value is not None:
            by_key = ix.values_by_key()
            seen = set()
            for key in target.value.keys():
                for occ in by_key.get(key, ()):
                    if id(occ) in seen:
                        continue
                    seen.add(id(occ))
                    words = ix.lines[occ.line].words[occ.first:occ.last + 1]
                    score = _value_score(target, occ, words)
                    if score > 0:
                        found.append(Match(page.number, line_boxes(words), round(score, 4), list(words)))
    return found


def _best_disjoint(found: list[Match], rank) -> list[Match]:
    """Best first; a span that shares a word with a better one is dropped."""
    found = sorted(found, key=lambda m: (-rank(m), m.page, len(m.words), m.boxes[0][1], m.boxes[0][0]))
    taken: set[tuple[int, int]] = set()
    result = []
    for m in found:
        ids = {(m.page, id(w)) for w in m.words}
        if ids & taken:
            continue
        taken |= ids
        result.append(m)
    return result


def find_all(text: str, pages: list[Page]) -> list[Match]:
    """Every place ``text`` is printed on ``pages``, best first, no two sharing a word."""
    return _best_disjoint(_candidates(text, pages), lambda m: m.score)


def locate(answer: str, pages: list[Page], kept=None, model_boxes=None) -> Match | None:
    """Where the answer is printed: the best span, preferring kept tiles and model boxes.

    ``kept`` is a list of ``tiles.Tile`` the model saw; ``model_boxes`` a list of
    ``vlm.base.ModelBox`` in page points. Neither makes a match on its own, and an answer
    that is only partly printed gets None.
    """
    found = _candidates(answer, pages)
    if not found:
        return None
    kept = list(kept or [])
    kept_words = {id(w) for t in kept for w in t.words}
    kept_pages = {t.page.number for t in kept}
    model_boxes = list(model_boxes or [])

    def rank(m: Match) -> float:
        r = m.score
        if kept_words and all(id(w) in kept_words for w in m.words):
            r += KEPT_BONUS
        elif m.page in kept_pages:
            r += KEPT_PAGE_BONUS
        if any(mb.page == m.page and _overlaps(mb, b) for mb in model_boxes for b in m.boxes):
            r += MODEL_BOX_BONUS
        return r

    return _best_disjoint(found, rank)[0]


def _overlaps(mb, box: Box) -> bool:
    """Whether a model box and a word box meet (the model's boxes are loose)."""
    return min(mb.x1, box[2]) > max(mb.x0, box[0]) and min(mb.y1, box[3]) > max(mb.y0, box[1])


def ground_result(doc: str, text: str, matches: list[Match]) -> dict:
    """What ``docq ground`` prints: ``{"doc", "text", "matches": [{"page", "boxes", "score"}]}``."""
    return {
        "doc": doc,
        "text": text,
        "matches": [
            {
                "page": m.page,
                "boxes": [
                    {"x0": round(b[0], 2), "y0": round(b[1], 2), "x1": round(b[2], 2), "y1": round(b[3], 2)}
                    for b in m.boxes
                ],
                "score": round(m.score, 4),
            }
            for m in matches
        ],
    }
