"""Dates and times as printed: ``2017-12-31``, ``31/12/2017``, ``12/31/2017``, ``31.12.17``,
``Dec 31, 2017``, ``31-Dec-17``, ``7. Mai 2014``, ``the 20th day of May, 2014``,
``15 de mayo de 2024``, ``15 gennaio 2024``, ``1er janvier 2024``, ``May 2014``; month names
in the languages of ``vocab.MONTHS``. A numeric date whose day and month may be read both
ways is ambiguous until the document's other dates settle the order (``infer_date_order``).
"""

from __future__ import annotations

import calendar
import re
from collections import Counter
from typing import Iterable

from docvqa_cli.values.kinds import Date, Time
from docvqa_cli.values.vocab import month_number

_MONTH_WORD = r"[^\W\d_]{3,10}\.?"
_SEP = r"\s*[-/.]\s*"
_ORD = r"(?:st|nd|rd|th|er|º|°|o|e)?"
_PATTERNS = [
    # 2017-12-31, 2017/12/31, 2017.12.31
    ("ymd", re.compile(r"(?<![\d.,])(\d{4})%s(\d{1,2})%s(\d{1,2})(?![\d])" % (_SEP, _SEP))),
    # 31/12/2017, 12/31/2017, 31.12.17, 31-12-17
    ("dmy", re.compile(r"(?<![\d.,])(\d{1,2})%s(\d{1,2})%s(\d{4}|\d{2})(?![\d]|[.,]\d)" % (_SEP, _SEP))),
    # 31 Dec 2017, 31-Dec-17, 7. Mai 2014, 3rd of August, 2014, the 20th day of May, 2014,
    # 15 de mayo de 2024
    ("d_mon_y", re.compile(
        r"(?<![\d.,])(\d{1,2})%s\.?[\s\-/]*(?:day\s+of\s+|of\s+|de\s+|di\s+)?(%s)[\s\-/,.]*(?:de\s+|del\s+)?"
        r"(\d{4}|'?\d{2})(?![\d]|[.,]\d)" % (_ORD, _MONTH_WORD), re.IGNORECASE)),
    # Dec 31, 2017, August 3 , 2014, Dec-31-2017, May 20th, 2014
    ("mon_d_y", re.compile(
        r"(?<![^\W\d_])(%s)[\s\-/]*(\d{1,2})%s(?:\s*day)?[\s\-/,.]*(\d{4})(?![\d]|[.,]\d)" % (_MONTH_WORD, _ORD),
        re.IGNORECASE)),
    # May 2014, mayo de 2024 (a month)
    ("mon_y", re.compile(r"(?<![^\W\d_])(%s)[\s,/-]*(?:de\s+)?(\d{4})(?![\d]|[.,]\d)" % _MONTH_WORD, re.IGNORECASE)),
]


# Cheap tests before the patterns: each pattern needs them to match (speed only).
_TWO_DIGITS = re.compile(r"\d\d")
_FOUR_DIGITS = re.compile(r"\d{4}")
_NEEDS_FOUR = frozenset({"ymd", "mon_d_y", "mon_y"})


def _year(text: str) -> int:
    y = int(text.lstrip("'"))
    if len(text.lstrip("'")) == 2:
        return y + 2000 if y < 70 else y + 1900
    return y


def _valid(y: int, m: int, d: int) -> bool:
    return 1 <= y <= 9999 and 1 <= m <= 12 and 1 <= d <= calendar.monthrange(y, m)[1]


def _iso(y: int, m: int, d: int | None = None) -> str:
    return f"{y:04d}-{m:02d}" if d is None else f"{y:04d}-{m:02d}-{d:02d}"


def _read(kind: str, m: re.Match) -> Date | None:
    readings: list[tuple[str, str]] = []
    if kind == "ymd":
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if _valid(y, mo, d):
            readings.append(("ymd", _iso(y, mo, d)))
    elif kind == "dmy":
        a, b, y = int(m.group(1)), int(m.group(2)), _year(m.group(3))
        if _valid(y, b, a):
            readings.append(("dmy", _iso(y, b, a)))
        if _valid(y, a, b) and a != b:
            readings.append(("mdy", _iso(y, a, b)))
    elif kind == "mon_y":
        month = month_number(m.group(1))
        y = int(m.group(2))
        if month and 1 <= y <= 9999 and len(m.group(1).rstrip(".")) >= 3:
            readings.append(("named", _iso(y, month)))
    else:
        if kind == "d_mon_y":
            d, name, y = m.group(1), m.group(2), m.group(3)
        else:
            name, d, y = m.group(1), m.group(2), m.group(3)
        month = month_number(name)
        if month and _valid(_year(y), month, int(d)):
            readings.append(("named", _iso(_year(y), month, int(d))))
    if not readings:
        return None
    orders = tuple(o for o, _ in readings)
    candidates = tuple(c for _, c in readings)
    return Date(candidates[0] if len(candidates) == 1 else None, candidates, orders, m.group().strip())


def find_dates(text: str) -> list[tuple[int, int, Date]]:
    """Dates printed in ``text``, as (start, end, Date), left to right, none overlapping
    (a full date wins over a month that is part of it)."""
    found: list[tuple[int, int, Date]] = []
    if not _TWO_DIGITS.search(text):
        return found  # every date prints a year of two digits or more
    four = _FOUR_DIGITS.search(text) is not None
    for kind, pattern in _PATTERNS:
        if kind in _NEEDS_FOUR and not four:
            continue
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e, _ in found):
                continue
            date = _read(kind, m)
            if date is not None:
                end = m.end()
                while end > m.start() and text[end - 1] in " ,.-/":
                    end -= 1
                found.append((m.start(), end, date))
    return sorted(found, key=lambda f: f[0])


_TIME_RE = re.compile(r"(?<![\d:.])(\d{1,2})[:.h](\d{2})(?::(\d{2}))?(?:\s*([ap])\.?\s?m\.?(?![^\W\d_]))?(?![\d:])", re.I)

_TIME_HINT = re.compile(r"\d[:.h]\d\d", re.I)  # what every time holds (a cheap test first)


def find_times(text: str) -> list[tuple[int, int, Time]]:
    """Times of day (``11:20``, ``8:05 pm``, ``23:59:59``) as (start, end, Time)."""
    out = []
    if not _TIME_HINT.search(text):
        return out
    for m in _TIME_RE.finditer(text):
        if m.group(0)[len(m.group(1))] != ":" and not m.group(4):
            continue  # "11.20" or "11h20" is a time only with am/pm
        h, mi = int(m.group(1)), int(m.group(2))
        sec = m.group(3)
        if m.group(4):
            if not 1 <= h <= 12:
                continue
            h = h % 12 + (12 if m.group(4).lower() == "p" else 0)
        if h > 23 or mi > 59 or (sec and int(sec) > 59):
            continue
        iso = f"{h:02d}:{mi:02d}" + (f":{int(sec):02d}" if sec else "")
        out.append((m.start(), m.end(), Time(iso, m.group())))
    return out


def parse_time(text: str) -> Time | None:
    s = text.strip()
    found = find_times(s)
    return found[0][2] if len(found) == 1 and found[0][0] == 0 and found[0][1] == len(s) else None


def parse_date(text: str) -> Date | None:
    """A text that is one date (a time after it is allowed: ``"30/03/2018 11:20"``), else None."""
    s = text.strip()
    dates = find_dates(s)
    if len(dates) != 1:
        return None
    start, end, date = dates[0]
    before = s[:start].strip(" :(")
    if before.casefold() in ("the", "on", "on the", "dated", "le", "el", "il", "am", "den"):
        before = ""
    rest = s[end:].strip(" ,.;)")
    if before or (rest and not (parse_time(rest) or re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", rest))):
        return None
    return date


def infer_date_order(dates: Iterable[Date]) -> str | None:
    """``"dmy"`` or ``"mdy"``: the day/month order a document's dates agree on, from the ones
    only one order can read (``25/12/2017`` says dmy). None when none says or they disagree
    evenly."""
    votes: Counter = Counter()
    for d in dates:
        m = re.match(r"^(\d{1,2})\s*[-/.]\s*(\d{1,2})\s*[-/.]", d.text)
        if m and len(d.candidates) == 1:
            a, b = int(m.group(1)), int(m.group(2))
            if a > 12 >= b:
                votes["dmy"] += 1
            elif b > 12 >= a:
                votes["mdy"] += 1
    if not votes or votes["dmy"] == votes["mdy"]:
        return None
    return "dmy" if votes["dmy"] > votes["mdy"] else "mdy"


def resolve_dates(dates: list[Date], default: str | None = None) -> list[Date]:
    """The dates of one document, each ambiguous one read in the order the others settle
    (or ``default``, e.g. the user's ``--date-order``, when they do not)."""
    order = infer_date_order(dates) or default
    return [d.resolve(order) for d in dates]
