"""Typed answers: the kind of value a question asks for, and that value normalised, read from
the words the page prints (the model's answer text only when the page does not print it).

``TYPES`` are the types a question may have; ``relevance.infer_type(question)`` reads one from
the question (question parsing, the one place that knows what a question asks for, lives there).
``read_typed(kind, answer, match, pages, date_order)`` returns a ``Typed``: the value as a
back-office system wants it (an amount as a decimal string with its ISO currency, a date as
ISO 8601, a number or a percent as a number, an id as printed, a duration as ``"30 days"``,
a time as ``HH:MM``), where it was read (``"page"``/``"answer"``/None) and a note when it
could not be settled. A value that cannot be read is None, never a guess: a date whose
day/month order neither the document (another date with a day above 12; else its language:
a month name not in English, as in "7. Mai 2014", means day first) nor ``date_order``
settles stays None with the note ``"ambiguous day/month order: A or B"``.
"""

from __future__ import annotations

import calendar
import re
import weakref
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


# --- the document's own conventions -------------------------------------------------------------

@dataclass(frozen=True)
class DocumentFacts:
    """What a document says about how it writes values: the day/month order its unambiguous
    numeric dates agree on, and the one ISO currency it names (None when none or several)."""

    date_order: str | None
    currency: str | None
    order_from: str | None = None  # "dates" (one read one way only) or "language" (its month names)


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


@dataclass(frozen=True)
class _PageFacts:
    dates: tuple  # values.Date, every date printed on the page
    codes: frozenset  # ISO currencies the page names
    rupee: bool  # prints the sign "Rs" before a number
    india: bool  # names India or a GSTIN
    foreign_month: bool  # a date with a month name not in English ("7. Mai 2014"): a day-first language


_ENGLISH_MONTHS = {m.lower() for m in (*calendar.month_name[1:], *calendar.month_abbr[1:], "sept")}
_PAGE_CACHE: dict[int, tuple] = {}  # id(page) -> (weak reference to the page, its facts)


def _names_currency(text: str, m: re.Match) -> bool:
    """Whether a code printed apart from any amount names the currency: alone on its line (a
    column header), in parentheses ("TOTAL (RM):"), before a colon, or after "in" or
    "currency" ("Amounts in EUR"). "SDN BHD" (a company form) and "try" are no currency."""
    before, after = text[:m.start()].rstrip(), text[m.end():].lstrip()
    return (not before and not after) or (before.endswith("(") and after.startswith(")")) \
        or after.startswith(":") or bool(re.search(r"(?:\bin|currency\W*)$", before, re.IGNORECASE))


def _page_facts(page) -> _PageFacts:
    hit = _PAGE_CACHE.get(id(page))
    if hit is not None and hit[0]() is page:
        return hit[1]
    dates, codes, texts = [], set(), []
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
            if code and (not m.group().isalpha() or (m.group().isupper() and _names_currency(line.text, m))):
                codes.add(code)
    text = "\n".join(texts)
    foreign = any(w.casefold().rstrip(".") not in _ENGLISH_MONTHS and values.month_number(w)
                  for d in dates if d.orders == ("named",) for w in re.findall(r"[^\W\d_]{3,}\.?", d.text))
    facts = _PageFacts(tuple(dates), frozenset(codes), bool(_RUPEE_SIGN.search(text)), bool(_INDIA.search(text)),
                       foreign)
    try:
        ref = weakref.ref(page)
    except TypeError:  # not weakly referenceable: not cached
        return facts
    if len(_PAGE_CACHE) > 4096:
        _PAGE_CACHE.clear()
    _PAGE_CACHE[id(page)] = (ref, facts)
    return facts


def document_facts(pages: Sequence) -> DocumentFacts:
    """Read from every line of ``pages``, once per page (a batch asks many questions of one
    document)."""
    per_page = [_page_facts(p) for p in pages]
    codes = set().union(*(f.codes for f in per_page)) if per_page else set()
    if not codes and any(f.rupee for f in per_page) and any(f.india for f in per_page):
        codes.add("INR")
    currency = next(iter(codes)) if len(codes) == 1 else None
    order = values.infer_date_order([d for f in per_page for d in f.dates])
    if order:
        return DocumentFacts(order, currency, "dates")
    if any(f.foreign_month for f in per_page):  # German, French, Spanish, Malay...: day first
        return DocumentFacts("dmy", currency, "language")
    return DocumentFacts(None, currency)


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


_ORDER_FROM = {"dates": "from the document's other dates",
               "language": "from the document's language (its month names)"}


def _normalise(kind: str, v, facts: DocumentFacts, date_order: str | None) -> Typed:
    if kind == "date":
        if v.ambiguous:
            # The document's dates, then the user's --date-order, then the document's language.
            by_dates = facts.date_order if facts.order_from == "dates" else None
            order = by_dates or date_order or facts.date_order
            settled = v.resolve(order) if order else v
            if settled.ambiguous:
                return Typed(kind, None, note=f"{AMBIGUOUS}: {' or '.join(v.candidates)}")
            how = "from --date-order" if order == date_order and not by_dates else _ORDER_FROM[facts.order_from]
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
