"""Checks a back-office user declares in a field file, over the typed values of one document.

A check is ``LEFT OP RIGHT``: each side field ids, numbers and ``today`` joined by ``+`` and
``-``; ``OP`` one of ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``. ``total = subtotal + tax``
holds within ``tolerance`` (default 0.01); ``date <= today`` compares ISO dates. A check is
declared once (``compile_checks``: a field it names that the file does not ask for is a usage
error naming the line) and flags a row (``Check.flag``): ``"ok"``, ``"failed"``, or
``"missing"`` when a value it needs is null. It never changes a value.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from docvqa_cli.errors import UsageError

DEFAULT_TOLERANCE = Decimal("0.01")
_OPS = ("<=", ">=", "!=", "==", "=", "<", ">")
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w.]*)|(?P<sign>[+-]))")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Check:
    id: str
    expression: str
    left: tuple  # ((sign, term), ...): term a Decimal or a name
    op: str
    right: tuple
    tolerance: Decimal

    def flag(self, values: dict) -> str:
        """``"ok"``, ``"failed"`` or ``"missing"`` for one document's values (id -> value)."""
        a, b = _side(self.left, values), _side(self.right, values)
        if a is None or b is None:
            return "missing"
        d = a - b
        ok = {"=": abs(d) <= self.tolerance, "==": abs(d) <= self.tolerance, "!=": abs(d) > self.tolerance,
              "<": d < 0, "<=": d <= 0, ">": d > 0, ">=": d >= 0}[self.op]
        return "ok" if ok else "failed"


def _number(value) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and _ISO.match(value.strip()):
        try:
            return Decimal(dt.date.fromisoformat(value.strip()).toordinal())
        except ValueError:
            return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


def _side(terms: tuple, values: dict) -> Decimal | None:
    total = Decimal(0)
    for sign, term in terms:
        if isinstance(term, Decimal):
            v = term
        elif term == "today":
            v = Decimal(dt.date.today().toordinal())
        else:
            v = _number(values.get(term))
        if v is None:
            return None
        total += v if sign == "+" else -v
    return total


def _parse_side(text: str, where: str) -> tuple:
    terms, pos, sign, want_term = [], 0, "+", True
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"{where}: cannot read {text[pos:].strip()!r}; write e.g. total = subtotal + tax")
        pos = m.end()
        if m.group("sign"):
            if want_term and terms:
                raise UsageError(f"{where}: two signs in a row in {text!r}")
            sign, want_term = m.group("sign"), True
            continue
        if not want_term:
            raise UsageError(f"{where}: a + or - is missing in {text!r}")
        terms.append((sign, Decimal(m.group("num")) if m.group("num") else m.group("name")))
        sign, want_term = "+", False
    if not terms or want_term:
        raise UsageError(f"{where}: an empty side in {text!r}")
    return tuple(terms)


def compile_checks(entries, question_ids, path: str) -> list[Check]:
    """The checks of a field file (``batch.questions.CheckEntry``); a check that cannot be read
    or names a field the file does not ask for is a usage error naming its line."""
    known = set(question_ids)
    out = []
    for e in entries:
        where = f"FIELDS {path}:{e.line}"
        op = next((o for o in _OPS if o in e.expression), None)
        if op is None:
            raise UsageError(f"{where}: check {e.expression!r} has no comparison (=, !=, <, <=, >, >=)")
        left, right = e.expression.split(op, 1)
        if any(o in right for o in _OPS):
            raise UsageError(f"{where}: check {e.expression!r} has more than one comparison")
        sides = _parse_side(left, where), _parse_side(right, where)
        for side in sides:
            for _, term in side:
                if isinstance(term, str) and term != "today" and term not in known:
                    raise UsageError(f"{where}: check {e.id!r} names {term!r}, which is no question id of the file")
        try:
            tol = DEFAULT_TOLERANCE if e.tolerance is None else Decimal(e.tolerance)
        except InvalidOperation:
            raise UsageError(f"{where}: tolerance {e.tolerance!r} is not a number") from None
        out.append(Check(e.id, e.expression, sides[0], op, sides[1], tol))
    return out
