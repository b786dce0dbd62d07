"""Lengths of time as contracts print them: ``thirty (30) days``, ``(30) days``, ``2 years``,
``twelve months``, ``90-day``, ``five (5) business days``, ``one year``. When a number is
written both in words and in digits and they disagree (``ten (30) days``) nothing is read.
"""

from __future__ import annotations

import re
from decimal import Decimal

from docvqa_cli.values.kinds import Duration
from docvqa_cli.values.vocab import NUMBER_WORD_RE, words_to_int

_UNITS = {"day": "day", "days": "day", "week": "week", "weeks": "week", "month": "month", "months": "month",
          "year": "year", "years": "year", "yr": "year", "yrs": "year", "mo": "month", "mos": "month"}
_QUALIFIERS = "calendar|business|working|banking|consecutive|full|clear|trading"
_DURATION_RE = re.compile(
    r"(?<![^\W_])(?:(?P<words>%s)\s*(?:\(\s*(?P<digits>\d+(?:[.,]\d+)?)\s*\))?|\(?\s*(?P<num>\d+(?:[.,]\d+)?)\s*\)?)"
    r"[\s-]*(?:(?P<qual>%s)\s+)?(?P<unit>days?|weeks?|months?|years?|yrs?|mos?)(?![^\W\d_])"
    % (NUMBER_WORD_RE, _QUALIFIERS),
    re.IGNORECASE,
)

# Every duration ends in a unit word: a cheap test before the full pattern.
_UNIT_HINT = re.compile(r"(?:days?|weeks?|months?|years?|yrs?|mos?)(?![^\W\d_])", re.IGNORECASE)


def find_durations(text: str) -> list[tuple[int, int, Duration]]:
    """Durations printed in ``text`` as (start, end, Duration)."""
    out = []
    if not _UNIT_HINT.search(text):
        return out
    for m in _DURATION_RE.finditer(text):
        count = None
        if m.group("words"):
            n = words_to_int(m.group("words"))
            if n is None:
                continue
            count = Decimal(n)
            if m.group("digits") and Decimal(m.group("digits").replace(",", ".")) != count:
                continue  # "ten (30) days": which one the parties meant is not ours to say
        else:
            count = Decimal(m.group("num").replace(",", "."))
        unit = _UNITS[m.group("unit").casefold()]
        qual = m.group("qual").casefold() if m.group("qual") else None
        out.append((m.start(), m.end(), Duration(count, unit, qual, m.group().strip())))
    return out


def parse_duration(text: str) -> Duration | None:
    """A text that is one duration (``"thirty (30) days"`` -> 30 days), else None."""
    s = text.strip().strip(".,;:")
    found = find_durations(s)
    if len(found) == 1 and found[0][0] == 0 and found[0][1] == len(s):
        return found[0][2]
    return None
