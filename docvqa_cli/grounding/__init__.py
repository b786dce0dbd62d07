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
A page's lines and values are read once and cached (``grounding.page``), so many answers
over one document cost little each (``benchmarks/grounding_speed.py``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from rapidfuzz.distance import Levenshtein

from docvqa_cli import values
from docvqa_cli.reading.documents import Page, Word
from docvqa_cli.grounding.page import (MAX_JUMPS, Occurrence, PageIndex, anchors, index, line_boxes, norm_text,
                                       starts_key)

__all__ = ["Match", "find_all", "locate", "ground_result", "norm_text", "line_boxes", "MAX_ANSWER"]

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

def _plain(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(_EDGE_PUNCT)


_EDGE_PUNCT = ".,;:!?*\"'()[]{}"
_DIGIT_RUNS = re.compile(r"\d+")
_CENTS = re.compile(r"\d\s?[.,]\s?\d{2}(?!\d)")
_FRACTION = re.compile(r"\d\s?[.,]\s?\d{1,2}(?!\d)")


def _runs(text: str) -> list[str]:
    """The digit runs of a text, as digits (``"Page 1 of 25"`` -> ``["1", "25"]``)."""
    return _DIGIT_RUNS.findall(unicodedata.normalize("NFKC", text))


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
    answer = unicodedata.normalize("NFKC", answer)  # fullwidth "（３０）" is "(30)"
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


def _text_spans(ix: PageIndex, target: _Target):
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
    close: dict[str, bool] = {}  # first words already tested
    for li, si in ix.starts_for(key, d, len(target.text.split()) - 1):
        s = lines[li].norms[si]
        if not s:
            continue
        ok = close.get(s)
        if ok is None:
            # a fuzzy span's first word is close to the start of the answer: at most a third
            # of its letters differ (and never more than the answer's own tolerance)
            ok = close[s] = key.startswith(s) if d == 0 else starts_key(s, key, min(d, max(1, len(s) // 3)))
        if ok:
            yield from _extend(lines, li, si, [], "", target, 0)


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


def _value_score(target: _Target, occ: Occurrence, words: list[Word]) -> float:
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
        ix = index(page)
        for span, dist in _text_spans(ix, target):
            score = _text_score(target, span, dist)
            if score > 0:
                found.append(Match(page.number, line_boxes(span), round(score, 4), list(span)))
        if target.value is not None:
            keys = target.value.keys()
            for occ in ix.values_near(anchors(target.value)):
                if occ.value.keys().isdisjoint(keys):
                    continue
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
