"""Find an answer's words on the page and return their boxes.

An answer is matched against spans of consecutive words. Text flows left to right along a
line, then on to the line just to its right on the same row (OCR often cuts one printed
line in two) or the line just below it, so an answer may run over several lines.
Three matchers score a span, and the best wins:

- text: case, accents, spaces and punctuation are ignored (``"BHD."`` = ``"bhd"``), with an
  edit-distance tolerance for OCR slips in longer answers (``"SDN BND"`` for ``"SDN BHD"``),
  but none for answers that are mostly digits (another digit is another value);
- amounts: the same value whatever the thousands and decimal separators (``"1,007.50"``,
  ``"1.007,50"``, ``"1 007,50"``), spaces inside the number (``"11. 80"``), trailing zeros
  (``319`` = ``"319.00"``) and currency signs or codes (``"$4.11"``, ``"Rs 1939"``, ``"RM9.00"``);
- dates: the same day written another way (``2017-12-31``, ``31/12/2017``, ``31.12.17``,
  ``Dec 31, 2017``, ``7. Mai 2014``).

``locate`` prefers spans inside the kept tiles, then elsewhere on their pages, then other
pages, and uses boxes the model emitted (already in page points) only to choose between
spans the text found. A ``Match`` has one box per text line of the span, in page points.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Sequence

from docvqa_cli.documents import Page, Word

Box = tuple[float, float, float, float]

# Scores of the matchers (a Match's score is in [0, 1]).
EXACT = 1.0  # the same characters (case, spaces and punctuation around it aside)
SAME_LETTERS = 0.98  # the same letters and digits, other punctuation ("@1.75" for "1.75")
AMOUNT = 0.95  # same amount, written differently
DATE = 0.95  # same day, written differently
DATE_AMBIGUOUS = 0.85  # same day if day and month are read the other way round too
PART_OF_WORD = 0.9  # factor when the value is only part of a word ("Total:9.00")
PART_OF_ANSWER = 0.8  # factor when only the date or amount inside a wordy answer is found
MIN_FUZZY = 0.75  # lowest text similarity accepted (answers of 8+ letters and digits)

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


_CURRENCY_SIGNS = "$€£¥₹₩₽¢฿₫₱₦₪"
_CURRENCY_CODES = (
    "usd eur gbp jpy cny rmb inr myr sgd aud cad chf hkd nzd sek nok dkk pln czk huf idr thb "
    "php vnd krw zar brl mxn rub try aed sar rm rs inr rp kr fr sfr dm"
).split()
_CURRENCY_RE = re.compile(
    r"^(?:[%s]|(?:%s)\.?)+|(?:[%s]|(?:%s)\.?)+$"
    % (re.escape(_CURRENCY_SIGNS), "|".join(_CURRENCY_CODES), re.escape(_CURRENCY_SIGNS),
       "|".join(_CURRENCY_CODES)),
    re.IGNORECASE,
)
# A number as printed: digits with separators (. , ' space, thin spaces) between them.
_NUMBER_BODY = r"\d(?:[\d.,'’\u00a0\u202f ]*\d)?"
_AMOUNT_RE = re.compile(r"^[-+(]?\s*(%s)\s*[-)]?$" % _NUMBER_BODY)
_AMOUNT_IN_RE = re.compile(r"(?<![\d.,])(%s)(?![\d]|[.,]\d)" % r"\d(?:[\d.,'’]*\d)?")


def parse_amount(text: str) -> set[Decimal]:
    """The values ``text`` may print as an amount (empty when it is not one).

    ``"1,007.50"`` and ``"1.007,50"`` -> {1007.50}; ``"11. 80"`` -> {11.80}; ``"$4.11"``,
    ``"RM 4.11"``, ``"4.11 EUR"`` -> {4.11}; ``"1,007"`` -> {1007, 1.007} (ambiguous).
    """
    s = text.strip().strip(":*=#").strip()
    prev = None
    while prev != s:  # currency signs and codes before or after, with spaces
        prev = s
        s = _CURRENCY_RE.sub("", s).strip()
    m = _AMOUNT_RE.match(s)
    if not m:
        return set()
    return _number_values(m.group(1))


def _number_values(body: str) -> set[Decimal]:
    body = re.sub(r"[\s\u00a0\u202f]+", " ", body)
    digits_only = re.sub(r"[^\d]", "", body)
    if not digits_only:
        return set()
    seps = [(i, ch) for i, ch in enumerate(body) if not ch.isdigit()]
    if not seps:
        return {Decimal(digits_only)}
    # Spaces next to a dot or comma are OCR noise ("11. 80"); other spaces group thousands.
    compact = re.sub(r" ?([.,'’]) ?", r"\1", body)
    values: set[Decimal] = set()
    marks = [ch for ch in compact if not ch.isdigit()]
    groups = re.split(r"[^\d]", compact)
    last = marks[-1]
    tail = groups[-1]
    if last in ".," and (len(set(marks)) > 1 or marks.count(last) == 1):
        # The last . or , is the decimal mark when it is the only one of its kind, or when
        # another mark groups thousands before it.
        if marks.count(last) == 1 and all(len(g) == 3 for g in groups[1:-1]):
            whole = "".join(groups[:-1])
            if whole:
                values.add(Decimal(f"{whole}.{tail}"))
    if all(len(g) == 3 for g in groups[1:]) and 1 <= len(groups[0]) <= 3:
        values.add(Decimal("".join(groups)))  # every mark groups thousands
    return values


_MONTHS = {}
for _n, _names in enumerate(
    [
        "jan january januar janvier enero gennaio januari janeiro",
        "feb february februar fevrier février febrero febbraio februari fevereiro",
        "mar march märz maerz mars marzo maart marco março mac",
        "apr april avril abril aprile",
        "may mai mayo maggio mei maio",
        "jun june juni juin junio giugno junho",
        "jul july juli juillet julio luglio julai julho",
        "aug august aout août agosto augustus ogos",
        "sep sept september septembre septiembre settembre setembro",
        "oct october oktober octobre octubre ottobre okt outubro",
        "nov november novembre noviembre novembro",
        "dec december dezember décembre decembre diciembre dicembre dis disember desember dezembro",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _n

_MONTH_NAME = r"[^\W\d_]{3,10}\.?"
_SEP = r"\s*[-/.]\s*"
_DATE_PATTERNS = [
    # 2017-12-31, 2017/12/31, 2017.12.31
    ("ymd", re.compile(r"(?<!\d)(\d{4})%s(\d{1,2})%s(\d{1,2})(?!\d)" % (_SEP, _SEP))),
    # 31/12/2017, 12/31/2017, 31.12.17, 31-12-17
    ("dmy", re.compile(r"(?<!\d)(\d{1,2})%s(\d{1,2})%s(\d{4}|\d{2})(?!\d)" % (_SEP, _SEP))),
    # 31 Dec 2017, 31-Dec-17, 7. Mai 2014, 3rd of August, 2014
    ("d_mon_y", re.compile(
        r"(?<!\d)(\d{1,2})(?:st|nd|rd|th)?\.?[\s\-/]*(?:of\s+)?(%s)[\s\-/,.]*(\d{4}|\d{2})(?!\d)"
        % _MONTH_NAME, re.IGNORECASE)),
    # Dec 31, 2017, August 3 , 2014, Dec-31-2017
    ("mon_d_y", re.compile(
        r"(?<![^\W\d_])(%s)[\s\-/]*(\d{1,2})(?:st|nd|rd|th)?[\s\-/,.]*(\d{4})(?!\d)"
        % _MONTH_NAME, re.IGNORECASE)),
]


def _year(text: str) -> int:
    y = int(text)
    return y + 2000 if y < 70 else (y + 1900 if y < 100 else y)


def _month(name: str) -> int | None:
    key = unicodedata.normalize("NFC", name.casefold().rstrip("."))
    return _MONTHS.get(key) or _MONTHS.get(key[:3])


def _valid(y: int, m: int, d: int) -> bool:
    import calendar

    return 1 <= m <= 12 and 1 <= d <= calendar.monthrange(y, m)[1] if 1 <= y <= 9999 else False


def find_dates(text: str) -> list[tuple[int, int, set[tuple[int, int, int]]]]:
    """Dates printed in ``text``: (start, end, the days (y, m, d) it may mean)."""
    found = []
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            days: set[tuple[int, int, int]] = set()
            if kind == "ymd":
                days.add((int(m.group(1)), int(m.group(2)), int(m.group(3))))
            elif kind == "dmy":
                a, b, y = int(m.group(1)), int(m.group(2)), _year(m.group(3))
                days.update({(y, b, a), (y, a, b)})
            else:
                if kind == "d_mon_y":
                    d, name, y = m.group(1), m.group(2), m.group(3)
                else:
                    name, d, y = m.group(1), m.group(2), m.group(3)
                month = _month(name)
                if month is None:
                    continue
                days.add((_year(y), month, int(d)))
            days = {day for day in days if _valid(*day)}
            if days:
                found.append((m.start(), m.end(), days))
    return found


def parse_date(text: str) -> set[tuple[int, int, int]]:
    """The days a text that is one date may mean (empty when it is not a date).

    A time after the date is ignored (``"30/03/2018 11:20"``).
    """
    s = text.strip()
    best: set[tuple[int, int, int]] = set()
    for start, end, days in find_dates(s):
        rest = s[end:].strip(" ,.;)")
        if not s[:start].strip(" :(") and (not rest or re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?\s*([ap]\.?m\.?)?", rest, re.I)):
            best |= days
    return best


# --- the page as lines of words -------------------------------------------------------------

@dataclass
class _Line:
    words: list[Word]
    box: Box
    next: list[int] = field(default_factory=list)  # indices of the lines text may flow on to


def _lines(page: Page) -> list[_Line]:
    groups: dict[int, list[Word]] = {}
    for w in page.words:
        groups.setdefault(w.line, []).append(w)
    lines = []
    for words in groups.values():
        words.sort(key=lambda w: w.x0)
        lines.append(_Line(words, _union(w.box for w in words)))
    lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
    for i, a in enumerate(lines):
        ax0, ay0, ax1, ay1 = a.box
        h = max(ay1 - ay0, 1e-6)
        right, below = [], []
        for j, b in enumerate(lines):
            if j == i:
                continue
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


def _union(boxes: Iterable[Sequence[float]]) -> Box:
    boxes = list(boxes)
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


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


# --- matching ---------------------------------------------------------------------------------

@dataclass
class _Target:
    text: str
    key: str  # norm_text
    amounts: set[Decimal]
    days: set[tuple[int, int, int]]
    cents: bool  # the answer prints a 2-digit fraction ("18.00")
    max_dist: int
    max_words: int


def _target(answer: str) -> _Target:
    key = norm_text(answer)
    n = len(key)
    max_dist = 0 if n < 5 else (1 if n < 8 else int(n * (1 - MIN_FUZZY)))
    if sum(ch.isdigit() for ch in key) * 2 >= n:
        max_dist = 0  # another digit is another value: numbers, dates and ids match exactly
    return _Target(
        text=answer,
        key=key,
        amounts=parse_amount(answer),
        days=parse_date(answer),
        cents=bool(re.search(r"\d[.,]\d{2}(?!\d)", answer)),
        max_dist=max_dist,
        max_words=2 * len(answer.split()) + 4,
    )


def _amount_score(target: _Target, words: list[Word]) -> float:
    """Whether ``words`` (one row, at most 3) print the target's amount."""
    if len(words) > 3 or not target.amounts:
        return 0.0
    if len(words) > 1:
        for a, b in zip(words, words[1:]):
            gap = b.x0 - a.x1
            char_w = (a.x1 - a.x0) / max(len(a.text), 1)
            glued = a.text[-1:] in ".," or b.text[:1] in ".," or gap < 0.4 * char_w
            group = re.fullmatch(r"\d{3}(?:[.,]\d{1,2})?[^\d]?", b.text) and re.search(r"\d{1,3}$", a.text)
            word_only_sign = parse_amount(a.text) == set() and not re.search(r"\d", a.text)
            if not (glued or group or word_only_sign):
                return 0.0
        text = " ".join(w.text for w in words)
        if parse_amount(text) & target.amounts and _money_like(target, text, text):
            return AMOUNT
        return 0.0
    text = words[0].text
    if parse_amount(text) & target.amounts and _money_like(target, text, text):
        return AMOUNT
    # The value inside a longer word: "Total:9.00", "(Rs1939)".
    for m in _AMOUNT_IN_RE.finditer(text):
        if (_number_values(m.group(1)) & target.amounts and not text[m.end():m.end() + 1].isalpha()
                and _money_like(target, m.group(1), text)):
            return AMOUNT * PART_OF_WORD
    return 0.0


_FRACTION_RE = re.compile(r"\d\s*[.,]\s*\d{1,2}(?!\d)")


def _money_like(target: _Target, number: str, text: str) -> bool:
    """An answer printed with cents ("18.00") is found only where the page prints a
    fraction too, or marks the number as money ("Rs 18"): not in "JALAN SAGU 18,"."""
    if not target.cents or _FRACTION_RE.search(number):
        return True
    return bool(re.search("[%s]" % re.escape(_CURRENCY_SIGNS), text)) or bool(
        re.search(r"(?<![^\W\d_])(?:%s)(?![^\W\d_])" % "|".join(_CURRENCY_CODES), text, re.IGNORECASE))


def _date_score(target: _Target, words: list[Word]) -> float:
    if len(words) > 6 or not target.days:
        return 0.0
    text = " ".join(w.text for w in words)
    first_end = len(words[0].text)
    last_start = len(text) - len(words[-1].text)
    for start, end, days in find_dates(text):
        # The date must begin in the first word and end in the last (a minimal span).
        if start >= first_end or end <= last_start or not (days & target.days):
            continue
        score = DATE if days == target.days or len(days) == len(target.days) == 1 else DATE_AMBIGUOUS
        whole = not text[:start].strip(" :(") and not text[end:].strip(" ,.;)")
        return score if whole else score * PART_OF_WORD
    return 0.0


def _spans(lines: list[_Line], target: _Target):
    """Spans (list of words, edit distance of their text to the target) worth scoring."""
    n = len(target.key)
    for li, line in enumerate(lines):
        for si in range(len(line.words)):
            column = list(range(n + 1))  # edit distance of key[:i] to the span text so far
            yield from _walk(lines, li, si, [], column, target, 0)


def _walk(lines, li, si, span, column, target: _Target, depth):
    key, max_dist = target.key, target.max_dist
    line = lines[li]
    for wi in range(si, len(line.words)):
        word = line.words[wi]
        span = span + [word]
        for ch in norm_text(word.text):
            new = [column[0] + 1]
            for i in range(1, len(key) + 1):
                new.append(min(column[i] + 1, new[i - 1] + 1, column[i - 1] + (key[i - 1] != ch)))
            column = new
        text_ok = bool(key) and min(column) <= max_dist
        yield span, column[-1] if key else None, len(span) <= 6 and all(
            w.line == span[0].line for w in span)
        may_be_value = (target.amounts or target.days) and len(span) < 6
        if not (text_ok or may_be_value) or len(span) >= target.max_words:
            return
    if depth < 4 and (key and min(column) <= max_dist):
        for nxt in line.next:
            yield from _walk(lines, nxt, 0, span, column, target, depth + 1)


def _score_span(target: _Target, span: list[Word], dist: int | None, one_line: bool) -> float:
    score = 0.0
    key = target.key
    if dist is not None and key:
        text = "".join(norm_text(w.text) for w in span)
        if dist == 0:
            score = EXACT if _plain(" ".join(w.text for w in span)) == _plain(target.text) else SAME_LETTERS
        elif dist <= target.max_dist and text:
            score = max(0.0, 1.0 - dist / max(len(key), len(text)))
            if score < MIN_FUZZY:
                score = 0.0
    if one_line and target.amounts:
        score = max(score, _amount_score(target, span))
    if one_line and target.days:
        score = max(score, _date_score(target, span))
    return score


def _plain(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split()).strip(_EDGE_PUNCT)


_EDGE_PUNCT = ".,;:!?*\"'()[]{}"


def _candidates(answer: str, pages: list[Page]) -> list[Match]:
    target = _target(answer)
    if not target.key:
        return []
    found: list[Match] = []
    for page in pages:
        if not page.words:
            continue
        for span, dist, one_line in _spans(_lines(page), target):
            score = _score_span(target, span, dist, one_line)
            if score > 0:
                found.append(Match(page.number, line_boxes(span), round(score, 4), list(span)))
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
    ``vlm.base.ModelBox`` in page points. Neither makes a match on its own.
    """
    found = _candidates(answer, pages)
    if not found:
        # A wordy answer ("The total is RM 9.00."): ground the one date or amount it names.
        values = {answer[a:b] for a, b, _ in find_dates(answer)}
        if not values:
            values = {m.group(1) for m in _AMOUNT_IN_RE.finditer(answer) if "." in m.group(1) or "," in m.group(1)}
        if len(values) == 1:
            found = [Match(m.page, m.boxes, round(m.score * PART_OF_ANSWER, 4), m.words)
                     for m in _candidates(values.pop(), pages)]
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


def to_page_box(box: Sequence[float], image_size: tuple[float, float], region: Box) -> Box:
    """Map a box the model gave in its own image space to page points.

    ``image_size`` is the (width, height) of the space the model's numbers live in (the
    resized image it saw, or (1000, 1000) for models that print per-mille coordinates);
    ``region`` is the part of the page that image shows, in points (a tile's box, or the
    whole page ``(0, 0, page.width, page.height)``). The result is clipped to the region.
    """
    w, h = image_size
    rx0, ry0, rx1, ry1 = region
    sx, sy = (rx1 - rx0) / w, (ry1 - ry0) / h
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))

    def clip(v, lo, hi):
        return min(max(v, lo), hi)

    return (
        clip(rx0 + x0 * sx, rx0, rx1),
        clip(ry0 + y0 * sy, ry0, ry1),
        clip(rx0 + x1 * sx, rx0, rx1),
        clip(ry0 + y1 * sy, ry0, ry1),
    )


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
