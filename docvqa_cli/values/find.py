"""Every value printed in a text, and the one value a short text is.

``find_values(text)`` returns the values in ``text`` left to right, none overlapping, the
more specific kind first: dates, times, durations, percentages, ids that mix letters and
digits, amounts (a number with a currency, or with two decimals), then plain numbers.
``parse(text, kind)`` reads a text that is one value of ``kind`` (or of any kind).
"""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass

from docvqa_cli.values.dates import find_dates, find_times, parse_date, parse_time
from docvqa_cli.values.durations import find_durations, parse_duration
from docvqa_cli.values.kinds import Amount, Value
from docvqa_cli.values.numbers import currency_suffix, parse_amount, parse_id, parse_number, parse_percent
from docvqa_cli.values.vocab import CURRENCIES, CURRENCY_RE

KINDS = ("date", "time", "duration", "percent", "amount", "number", "id")


@dataclass(frozen=True)
class Found:
    """A value found in a text: ``text[start:end]`` prints ``value`` (of ``value.kind``)."""

    start: int
    end: int
    value: Value

    @property
    def kind(self) -> str:
        return self.value.kind


_MINUS = "-−–"
# Digits and marks; a space only next to a mark (OCR's "11. 80"), or a thin/no-break space.
_BODY = r"\d(?:[\d'’\u00a0\u202f]|[.,]\s?(?=\d)|\s(?=[.,]\s?\d))*"
_CUR = CURRENCY_RE.pattern
_NUMBER_IN_TEXT = re.compile(r"(?<![\d.,])%s(?![\d]|[.,]\d)" % _BODY)
_CUR_AFTER = re.compile(r"\s?(?:%s)" % _CUR, re.IGNORECASE)
# What a currency after a number starts with: a cheap test before the long alternation.
_CUR_AFTER_START = re.compile(r"\s?[%s]" % re.escape("".join(sorted({c[0] for c in CURRENCIES}))), re.IGNORECASE)
_PERCENT_IN_TEXT = re.compile(r"(?<![\w.,])[%s+]?%s\s*(?:%%|per\s?cent(?![^\W\d_])|pct(?![^\W\d_]))" % (_MINUS, _BODY),
                              re.IGNORECASE)
_ID_IN_TEXT = re.compile(r"(?<![\w/.-])#?[^\W_][\w/.-]*[^\W_](?![\w/-])")
_ORDINAL = re.compile(r"^\d+(?:st|nd|rd|th|er|e|o)$", re.IGNORECASE)
_PERCENT_HINT = re.compile(r"%|per\s?cent|pct", re.IGNORECASE)  # what every percentage holds
_DIGIT_MARK_DIGIT = re.compile(r"\d[/-]\d")
_CENTS = re.compile(r"\d\s?[.,]\s?\d{2}(?!\d)")


def find_values(text: str) -> list[Found]:
    """The values printed in ``text``, left to right, none overlapping."""
    return list(_find_values(text))


@functools.lru_cache(maxsize=16384)
def _find_values(text: str) -> tuple[Found, ...]:
    found: list[Found] = []

    def free(a: int, b: int) -> bool:
        return all(f.end <= a or f.start >= b for f in found)

    if not any(map(str.isdigit, text)):
        # no digit: no date, time, percentage, id or number; a duration in words only
        return tuple(Found(a, b, v) for a, b, v in find_durations(text))
    for finder in (find_dates, find_times, find_durations):
        for a, b, v in finder(text):
            if free(a, b):
                found.append(Found(a, b, v))
    if _PERCENT_HINT.search(text):
        for m in _PERCENT_IN_TEXT.finditer(text):
            v = parse_percent(m.group())
            if v and free(*m.span()):
                found.append(Found(m.start(), m.end(), v))
    for m in _ID_IN_TEXT.finditer(text):
        tok = m.group()
        if not any(map(str.isdigit, tok)):
            continue
        mixed = any(map(str.isalpha, tok)) or _DIGIT_MARK_DIGIT.search(tok)
        if mixed and not _ORDINAL.match(tok) and free(*m.span()) and parse_amount(tok) is None:
            v = parse_id(tok)
            if v:
                found.append(Found(m.start(), m.end(), v))
    for m in _NUMBER_IN_TEXT.finditer(text):
        v, a, b = _number_at(text, m.start(), m.end())
        if not free(a, b):
            a, b = m.span()
            v = parse_number(m.group()) if free(a, b) else None
        if v is not None:
            found.append(Found(a, b, v))
    return tuple(sorted(found, key=_START))


_START = operator.attrgetter("start")


def _number_at(text: str, a: int, b: int) -> tuple[Value | None, int, int]:
    """The number whose digits are ``text[a:b]``, with its currency, sign and parentheses."""
    body = text[a:b]
    start, end, cur = a, b, False
    before = text[max(0, a - 9):a]
    sym = currency_suffix(before[:-1] if before.endswith(" ") else before)
    if sym:
        start, cur = a - len(sym) - (1 if before.endswith(" ") else 0), True
    elif a and text[a - 1].isalpha():
        return None, a, b  # digits inside a word ("ABC123"): an id, not a number
    if start and text[start - 1] == "(" and text[end:end + 1] == ")":
        start, end = start - 1, end + 1
    if start and text[start - 1] in _MINUS + "+" and (start < 2 or not text[start - 2].isalnum()):
        start -= 1
    elif text[end:end + 1] in _MINUS and not text[end + 1:end + 2].isalnum() and text[start - 1:start] != "(":
        end += 1
    if not cur:
        m = _CUR_AFTER.match(text, end) if _CUR_AFTER_START.match(text, end) else None
        if m:
            end, cur = m.end(), True
    if not (cur or _CENTS.search(body)):
        # a plain number: parentheses around it are an enumeration ("thirty (30)", "(1)"),
        # not a negative; a sign is kept ("-3")
        start = a - 1 if a and text[a - 1] in _MINUS + "+" and (a < 2 or not text[a - 2].isalnum()) else a
        return parse_number(text[start:b]), start, b
    v = parse_amount(text[start:end])
    if v is None:
        return parse_number(body), a, b
    return v, start, end


_PARSERS = {
    "date": parse_date, "time": parse_time, "duration": parse_duration, "percent": parse_percent,
    "amount": parse_amount, "number": parse_number, "id": parse_id,
}


@functools.lru_cache(maxsize=16384)
def parse(text: str, kind: str | None = None) -> Value | None:
    """The value a text is: of ``kind`` when given (one of ``KINDS``), else the first kind
    that reads the whole text (dates before amounts before ids). None when it is no value."""
    if kind is not None:
        if kind not in _PARSERS:
            raise ValueError(f"unknown value kind {kind!r}: use one of {', '.join(KINDS)}")
        return _PARSERS[kind](text)
    for k in KINDS:
        v = _PARSERS[k](text)
        if v is not None:
            if k == "amount" and isinstance(v, Amount) and v.symbol is None and not _CENTS.search(text.strip()):
                continue  # a bare number without cents is a number
            return v
    return None
