"""The normalised values, one small frozen dataclass per kind.

Each carries ``text`` (the characters it was read from) and ``keys()``: what two values must
share to be the same value (``"1,007.50"`` and ``"1.007,50"``; ``31/12/2017`` and
``Dec 31, 2017``). Grounding compares keys; typed answers report the normalised fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal


def _num_key(d: Decimal) -> tuple:
    return ("num", d.normalize() if d else Decimal(0))


@dataclass(frozen=True)
class Number:
    """A number: ``value`` is the likeliest reading; ``readings`` every reading the marks allow
    (``"1,007"`` may be 1007 or 1.007)."""

    value: Decimal
    readings: tuple[Decimal, ...]
    text: str = ""

    kind = "number"

    def keys(self) -> frozenset:
        keys = {_num_key(d) for d in self.readings}
        digits = "".join(ch for ch in self.text if ch.isdigit())
        if digits and digits == self.text.strip().lstrip("#"):
            keys.add(("id", digits))  # "12345" may also be an id printed as a plain number
        return frozenset(keys)


@dataclass(frozen=True)
class Amount:
    """Money: ``value`` signed (``"(11.80)"`` and ``"-11.80"`` are -11.80), ``currency`` an ISO
    4217 code when the printed sign or code names one (``"RM"`` -> MYR, ``"$"`` -> None),
    ``symbol`` the sign or code as printed."""

    value: Decimal
    readings: tuple[Decimal, ...]
    currency: str | None = None
    symbol: str | None = None
    text: str = ""

    kind = "amount"

    def keys(self) -> frozenset:
        return frozenset(_num_key(d) for d in self.readings)


@dataclass(frozen=True)
class Percent:
    value: Decimal
    text: str = ""

    kind = "percent"

    def keys(self) -> frozenset:
        return frozenset({("pct", self.value.normalize())})


@dataclass(frozen=True)
class Date:
    """A calendar day (or a month, ``"May 2014"`` -> ``2014-05``).

    ``candidates`` are the ISO days the text may mean, with ``orders`` the reading of each
    (``"dmy"``, ``"mdy"``, ``"ymd"``, ``"named"``). ``iso`` is the day when only one reading is
    valid, else None, and ``ambiguous`` says so: ``02/12/2017`` is 2017-12-02 or 2017-02-12
    until ``resolve("dmy")`` (see ``dates.infer_date_order``) settles it.
    """

    iso: str | None
    candidates: tuple[str, ...]
    orders: tuple[str, ...]
    text: str = ""

    kind = "date"

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1

    @property
    def days(self) -> frozenset:
        """The candidate days as (year, month, day) tuples (full dates only)."""
        return frozenset(tuple(int(p) for p in c.split("-")) for c in self.candidates if c.count("-") == 2)

    def resolve(self, order: str | None) -> "Date":
        """This date read in ``order`` (``"dmy"``/``"mdy"``) when that settles it, else itself."""
        if not self.ambiguous or order not in self.orders:
            return self
        iso = self.candidates[self.orders.index(order)]
        return replace(self, iso=iso, candidates=(iso,), orders=(order,))

    def keys(self) -> frozenset:
        return frozenset(("date", c) for c in self.candidates)


@dataclass(frozen=True)
class Time:
    """A time of day, ``iso`` as ``HH:MM`` or ``HH:MM:SS`` (24-hour)."""

    iso: str
    text: str = ""

    kind = "time"

    def keys(self) -> frozenset:
        return frozenset({("time", self.iso)})


@dataclass(frozen=True)
class Duration:
    """A length of time: ``count`` of ``unit`` (day, week, month, year); ``qualifier`` a word
    such as "business" or "calendar" printed between them. ``"thirty (30) days"`` is 30 days."""

    count: Decimal
    unit: str
    qualifier: str | None = None
    text: str = ""

    kind = "duration"

    def keys(self) -> frozenset:
        return frozenset({("dur", self.count.normalize(), self.unit)})


@dataclass(frozen=True)
class Id:
    """An identifier: ``text`` its printed characters (label and edge punctuation removed),
    ``key`` the letters and digits in upper case (``"INV-0012"`` -> ``"INV0012"``)."""

    text: str
    key: str

    kind = "id"

    def keys(self) -> frozenset:
        keys = {("id", self.key)}
        if self.key.isdigit():
            keys.add(("num", Decimal(self.key).normalize() if int(self.key) else Decimal(0)))
        return frozenset(keys)


Value = Number | Amount | Percent | Date | Time | Duration | Id


def same_value(a: Value, b: Value) -> bool:
    """Whether ``a`` and ``b`` may be the same value (they share a key)."""
    return bool(a.keys() & b.keys())
