"""Typed answers: the kind of value a question asks for, and that value normalised, read from
the words the page prints (the model's answer text only when the page does not print it).

``TYPES`` are the types a question may have; ``infer_type(question)`` reads one from the
question (relevance's question parsing, the one place that knows what a question asks for).
``read_typed(kind, answer, match, pages, date_order)`` returns a ``Typed``: the value as a
back-office system wants it (an amount as a decimal string with its ISO currency, a date as
ISO 8601, a number or a percent as a number, an id as printed, a duration as ``"30 days"``,
a time as ``HH:MM``), where it was read (``"page"``/``"answer"``/None) and a note when it
could not be settled. A value that cannot be read is None, never a guess: a date whose
day/month order neither the document (another date with a day above 12) nor ``date_order``
settles stays None with the note ``"ambiguous day/month order: A or B"``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

from docvqa_cli import values
from docvqa_cli.options import DATE_ORDERS, TYPES  # noqa: F401 (the commands' choices, written once)

AMBIGUOUS = "ambiguous day/month order"

# The value kinds of ``values`` each type accepts on the page, best first ("1,007" printed
# without cents is a number, and still the amount a question about an amount wants).
_ACCEPTS = {
    "amount": ("amount", "number"),
    "number": ("number", "amount"),
    "percent": ("percent",),
    "date": ("date",),
    "id": ("id", "number"),
    "duration": ("duration",),
    "time": ("time",),
}


@dataclass(frozen=True)
class Typed:
    """A record's typed fields: ``type``, ``value`` (JSON-ready), ``currency`` (amounts),
    ``source`` (``"page"``, ``"answer"`` or None) and ``note`` (why a value is None or how it
    was settled)."""

    type: str | None = None
    value: object = None
    currency: str | None = None
    source: str | None = None
    note: str | None = None


# What a question's own words say about the type, before relevance's field types (which hold
# every kind a field may have: "due" asks for the total's amount and the due date's date).
# Checked in order; the first cue the question holds wins. Longer wh-phrases first.
_CUES = (
    ("percent", ("rate", "percent", "percentage", "%")),
    ("duration", ("how long", "how many days", "how many weeks", "how many months", "how many years")),
    ("date", ("when", "date", "day")),
    ("time", ("what time",)),
    ("amount", ("how much",)),
    ("number", ("how many",)),
    ("text", ("who", "where", "which", "how was")),
    ("duration", ("period", "term", "duration")),
    ("id", ("number", "no", "id", "reference", "ref", "code")),
    ("amount", ("total", "subtotal", "amount", "price", "fee", "cost", "sum", "balance", "tax", "vat", "paid", "due",
                "charge", "charged", "net", "gross")),
)


@functools.lru_cache(maxsize=1024)
def infer_type(question: str) -> str:
    """The type a question asks for ("What is the total?" -> amount, "When ...?" -> date,
    "Who ...?" -> text): the first of ``_CUES`` its words hold, else the first value kind
    relevance's question parsing reads in it that is one of ``TYPES``, else ``"text"``."""
    from docvqa_cli.relevance.question import parse_question
    from docvqa_cli.relevance.vocabulary import tokens

    words = " " + " ".join(tokens(question)) + " "
    for kind, cues in _CUES:
        if any(f" {' '.join(tokens(c)) or c} " in words for c in cues) or ("%" in cues and "%" in question):
            return kind
    for kind in parse_question(question).types:
        if kind in TYPES:
            return kind
    return "text"


# --- the document's own conventions -------------------------------------------------------------

@dataclass(frozen=True)
class DocumentFacts:
    """What a document says about how it writes values: the day/month order its unambiguous
    numeric dates agree on, and the one ISO currency it names (None when none or several)."""

    date_order: str | None
    currency: str | None


# Currencies a document names in words ("All charges are in US Dollars"), and the one an
# ambiguous sign means where the document says where it is ("Rs" with an Indian GSTIN).
_NAMED = re.compile(r"(?<![^\W\d_])(us|u\.s\.|united states|canadian|australian|singapore|hong kong|new zealand|"
                    r"indian|pakistani|sri lankan|swiss|japanese|malaysian)\s+(dollar|rupee|franc|yen|ringgit)s?"
                    r"(?![^\W\d_])", re.IGNORECASE)
_NAMED_CODES = {"us": "USD", "u.s.": "USD", "united states": "USD", "canadian": "CAD", "australian": "AUD",
                "singapore": "SGD", "hong kong": "HKD", "new zealand": "NZD", "indian": "INR", "pakistani": "PKR",
                "sri lankan": "LKR", "swiss": "CHF", "japanese": "JPY", "malaysian": "MYR"}
_RUPEE_SIGN = re.compile(r"(?<![^\W\d_])Rs\.?(?=\s?[-\d])")
_INDIA = re.compile(r"(?<![^\W\d_])(India|GSTIN)(?![^\W\d_])")


def document_facts(pages: Sequence) -> DocumentFacts:
    """Read from every line of ``pages`` (``values`` caches each line's reading)."""
    dates, codes, texts = [], set(), []
    for page in pages:
        for line in values.group_lines(page.words):
            texts.append(line.text)
            for m in _NAMED.finditer(line.text):
                codes.add(_NAMED_CODES[re.sub(r"\s+", " ", m.group(1).lower())])
            for f in values.find_values(line.text):
                if f.kind == "date":
                    dates.append(f.value)
                elif f.kind == "amount" and f.value.currency:
                    codes.add(f.value.currency)
            for m in values.CURRENCY_RE.finditer(line.text):
                code = values.CURRENCIES.get(m.group().casefold())
                if code and (m.group().isupper() or not m.group().isalpha()):  # "EUR", "€"; not "try"
                    codes.add(code)
    text = "\n".join(texts)
    if not codes and _RUPEE_SIGN.search(text) and _INDIA.search(text):
        codes.add("INR")
    return DocumentFacts(values.infer_date_order(dates), next(iter(codes)) if len(codes) == 1 else None)


# --- reading the value ---------------------------------------------------------------------------

def _span_text(match) -> str:
    return " ".join(w.text for w in match.words) if match is not None and match.words else ""


def _pick(kind: str, text: str, hint) -> values.Value | None:
    """The value of ``kind`` printed in ``text``: the one that is the same value as ``hint``
    (the answer's own reading) when several are printed, else the only one."""
    found = [f.value for f in values.find_values(text) if f.kind in _ACCEPTS[kind]]
    if not found:
        whole = values.parse(text.strip(), _ACCEPTS[kind][0]) if text.strip() else None
        return whole
    if hint is not None:
        same = [v for v in found if values.same_value(v, hint)]
        if same:
            return same[0]
    return found[0] if len(found) == 1 else None


def _decimal(d: Decimal) -> str:
    return format(d, "f")


def _number(d: Decimal):
    """A JSON number: an int when whole, else a float (its decimal text is exact enough)."""
    return int(d) if d == d.to_integral_value() else float(d)


def _normalise(kind: str, v, facts: DocumentFacts, date_order: str | None) -> Typed:
    if kind == "date":
        if v.ambiguous:
            order = facts.date_order or date_order
            settled = v.resolve(order) if order else v
            if settled.ambiguous:
                return Typed(kind, None, note=f"{AMBIGUOUS}: {' or '.join(v.candidates)}")
            how = "from the document's other dates" if facts.date_order else "from --date-order"
            return Typed(kind, settled.iso, note=f"day/month order {order} {how}")
        return Typed(kind, v.iso)
    if kind == "amount":
        amount = getattr(v, "value", None)
        currency = getattr(v, "currency", None)
        note = None
        if currency is None and facts.currency:
            currency, note = facts.currency, f"currency {facts.currency} from the document"
        return Typed(kind, _decimal(amount), currency, note=note)
    if kind == "number":
        return Typed(kind, _number(v.value))
    if kind == "percent":
        return Typed(kind, _number(v.value))
    if kind == "id":
        return Typed(kind, v.text.strip() if v.kind == "id" else v.text.strip().lstrip("#"))
    if kind == "duration":
        unit = v.unit + ("" if v.count == 1 else "s")
        return Typed(kind, f"{_decimal(v.count.normalize())} {unit}")
    if kind == "time":
        return Typed(kind, v.iso)
    return Typed(kind)


def read_typed(kind: str | None, answer: str, match, pages: Sequence, date_order: str | None = None) -> Typed:
    """The typed value of an answer of type ``kind``: read from ``match``'s printed words
    (a ``grounding.Match``) when the page prints it, else from ``answer``; ``text`` and
    None carry no value."""
    if not kind or kind == "text":
        return Typed(kind)
    facts = document_facts(pages) if pages else DocumentFacts(None, None)
    hint = values.parse(answer.strip(), _ACCEPTS[kind][0]) if answer and answer.strip() else None
    span = _span_text(match)
    if span:
        v = _pick(kind, span, hint)
        if v is not None:
            t = _normalise(kind, v, facts, date_order)
            return Typed(t.type, t.value, t.currency, "page" if t.value is not None else None, t.note)
    if hint is not None:
        t = _normalise(kind, hint, facts, date_order)
        return Typed(t.type, t.value, t.currency, "answer" if t.value is not None else None, t.note)
    return Typed(kind, note="no value of this type in the answer" if answer and answer.strip() else None)
