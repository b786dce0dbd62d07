"""Numbers, amounts, percentages and ids as printed: one parser each.

A number's marks are read the way documents print them: ``1,007.50``, ``1.007,50``,
``1 007,50``, ``1'007.50``, Indian grouping ``1,23,456.00``, OCR spaces next to a mark
(``11. 80``); ``1,007`` may be 1007 or 1.007 (both readings kept, thousands first). A sign,
parentheses or a trailing minus make it negative (``-11.80``, ``(11.80)``, ``11.80-``).
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal

from docvqa_cli.values.kinds import Amount, Id, Number, Percent
from docvqa_cli.values.vocab import CURRENCIES, currency_code

_SPACES = "\u00a0\u202f\u2009 "
NUMBER_BODY = r"\d(?:[\d.,'’%s]*\d)?" % _SPACES
_MINUS = "-−–"
_NUMBER_RE = re.compile(r"^([%s+]?)\s*(\(?)\s*(%s)\s*(\)?)\s*([%s]?)$" % (_MINUS, NUMBER_BODY, _MINUS))


_SPACE_RUN = re.compile("[%s]+" % _SPACES)
_NOT_DIGIT = re.compile(r"[^\d]")
_MARK_SPACES = re.compile(r" ?([.,'’]) ?")


@functools.lru_cache(maxsize=16384)
def number_readings(body: str) -> tuple[Decimal, ...]:
    """The values a printed number (digits and marks, no sign) may have, likeliest first."""
    body = _SPACE_RUN.sub(" ", body.strip())
    if not body or not body[0].isdigit() or not body[-1].isdigit():
        return ()
    if not _NOT_DIGIT.search(body):
        return (Decimal(body),)
    # Spaces next to a dot or comma are OCR noise ("11. 80"); other spaces group thousands.
    compact = _MARK_SPACES.sub(r"\1", body)
    marks = [ch for ch in compact if not ch.isdigit()]
    groups = _NOT_DIGIT.split(compact)
    if any(not g for g in groups):
        return ()
    last, tail = marks[-1], groups[-1]
    readings: list[Decimal] = []
    thousands_marks = marks[:-1] if last in ".," and marks.count(last) == 1 else marks
    int_groups = groups[:-1] if thousands_marks is not marks else groups
    if all(len(g) == 3 for g in groups[1:]) and 1 <= len(groups[0]) <= 3 and groups[0] != "0" or (
            len(groups) > 2 and _indian(groups)):
        if len(set(marks)) == 1:
            readings.append(Decimal("".join(groups)))  # every mark groups thousands
    if last in ".," and marks.count(last) == 1 and len(set(thousands_marks)) <= 1 and last not in thousands_marks:
        # The last . or , is the decimal mark when it is the only one of its kind, and any
        # other marks group thousands (in threes, or the Indian way) before it.
        if len(int_groups) == 1 or (all(len(g) == 3 for g in int_groups[1:]) and 1 <= len(int_groups[0]) <= 3) or (
                len(int_groups) > 2 and _indian(int_groups)):
            readings.append(Decimal(f"{''.join(int_groups)}.{tail}"))
    seen, out = set(), []
    for r in readings:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return tuple(out)


def _indian(groups: list[str]) -> bool:
    """1,23,45,678: a first group of 1-2 digits, then pairs, then a last group of three."""
    return 1 <= len(groups[0]) <= 2 and all(len(g) == 2 for g in groups[1:-1]) and len(groups[-1]) == 3


def _signed(sign: str, lpar: str, rpar: str, trail: str, readings: tuple[Decimal, ...]) -> tuple[Decimal, ...] | None:
    if bool(lpar) != bool(rpar) or (sign and trail):
        return None
    negative = (sign and sign in _MINUS) or (lpar and rpar) or trail
    return tuple(-r if negative else r for r in readings)


@functools.lru_cache(maxsize=16384)
def parse_number(text: str) -> Number | None:
    """A text that is one number (sign and marks allowed, no currency), else None."""
    m = _NUMBER_RE.match(text.strip())
    if not m:
        return None
    readings = _signed(m.group(1), m.group(2), m.group(4), m.group(5), number_readings(m.group(3)))
    if not readings:
        return None
    return Number(readings[0], readings, text.strip())


def currency_suffix(text: str) -> str | None:
    """The currency sign or code that ``text`` ends with (``"Total: RM"`` -> ``"RM"``), if any:
    the longest ending that is one, not glued to a letter before it."""
    tail = _TAIL.search(text)
    if not tail:
        return None
    cand = tail.group()
    for k in range(len(cand)):
        piece = cand[k:]
        key = piece.casefold()
        if (key in CURRENCIES or key.rstrip(".") in CURRENCIES) and not (
                piece[0].isalpha() and (k and cand[k - 1].isalpha() or not k and tail.start() and text[tail.start() - 1].isalpha())):
            return piece
    return None


def currency_prefix(text: str) -> str | None:
    """The currency sign or code that ``text`` starts with (``"RM9.00"`` -> ``"RM"``), if any."""
    head = _HEAD.match(text)
    if not head:
        return None
    cand = head.group()
    for k in range(len(cand), 0, -1):
        piece = cand[:k]
        key = piece.casefold()
        if (key in CURRENCIES or key.rstrip(".") in CURRENCIES) and not (
                piece[-1].isalpha() and k < len(cand) and cand[k].isalpha()):
            return piece
    return None


_TAIL = re.compile(r"[^\d\s()]{1,6}$")
_HEAD = re.compile(r"^[^\d\s()+%s]{1,6}" % re.escape(_MINUS))


def _strip_currency(s: str) -> tuple[str, str | None]:
    """``s`` without the currency signs or codes before or after it, and the first of them."""
    symbol = None
    s = s.strip()
    while True:
        cur = currency_prefix(s)
        if cur:
            symbol = symbol or cur
            s = s[len(cur):].lstrip(" .:")
            continue
        cur = currency_suffix(s)
        if cur and len(cur) < len(s):
            symbol = symbol or cur
            s = s[:-len(cur)].rstrip()
            continue
        return s, symbol


@functools.lru_cache(maxsize=16384)
def parse_amount(text: str) -> Amount | None:
    """A text that is one amount: a number with an optional currency sign or ISO code before
    or after it (``"KES 1,250.00"``, ``"1.250,00 €"``, ``"₹1,23,456.00"``, ``"-RM 11.80"``)."""
    s = text.strip().strip(":*=#").strip()
    sign = ""
    if s and s[0] in _MINUS + "+" and not s[1:2].isdigit():  # "-RM 11.80", "- $4.00"
        sign, s = s[0], s[1:]
    body, symbol = _strip_currency(s)
    if sign and body[:1] in _MINUS + "+":
        return None
    number = parse_number(sign + body)
    if number is None:
        return None
    code = currency_code(symbol.rstrip(".")) if symbol else None
    if code is None and symbol:
        code = currency_code(symbol)
    return Amount(number.value, number.readings, code, symbol, text.strip())


_PERCENT_RE = re.compile(r"^([%s+]?\s*%s)\s*(?:%%|per\s?cent|pct\.?)$" % (_MINUS, NUMBER_BODY), re.IGNORECASE)


@functools.lru_cache(maxsize=16384)
def parse_percent(text: str) -> Percent | None:
    """``"15%"``, ``"7,5 %"``, ``"15 percent"`` -> Percent(15), Percent(7.5)."""
    m = _PERCENT_RE.match(text.strip())
    if not m:
        return None
    number = parse_number(m.group(1))
    if number is None:
        return None
    # a percentage is rarely grouped in thousands: "7,500 %" is 7.5 % only if no other reading
    value = next((r for r in number.readings if abs(r) <= 1000), number.value)
    return Percent(value, text.strip())


_ID_LABEL = re.compile(r"^(?:#|no\.?|nr\.?|n[°º]|num(?:ber)?\.?)\s*:?\s*", re.IGNORECASE)
_ID_RE = re.compile(r"^[^\W_](?:[\w./\\-]*[^\W_])?$")


@functools.lru_cache(maxsize=16384)
def parse_id(text: str) -> Id | None:
    """An identifier: one token with at least one digit (``"INV-0012"``, ``"#4521"``,
    ``"No. 2017/88"``); a leading label (``#``, ``No.``) and edge punctuation are not part of it."""
    s = text.strip().strip(".,;:()[]{}\"'")
    s = _ID_LABEL.sub("", s).strip()
    if not s or not _ID_RE.match(s) or not any(ch.isdigit() for ch in s):
        return None
    key = "".join(ch for ch in s if ch.isalnum()).upper()
    return Id(s, key)
