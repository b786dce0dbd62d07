"""What a question asks for: the phrases to look for, the kinds of value, the usual place.

``parse_question(text) -> Query``: the question's terms, the fields of ``fields.json`` it
names ("invoice number", "how much"), their labels and synonyms as weighted phrases, the
kinds of value wanted (amount, date, id, ...) and where the field usually sits.
``infer_type(text)``: the one type of ``options.TYPES`` the question asks for (a record's
``type`` and the typed value ``typed.read_typed`` reads).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

from docvqa_cli.options import TYPES
from docvqa_cli.relevance.vocabulary import tokens, vocabulary

_WH_TYPES = {tuple(tokens(cue)): kind for cue, kind in (
    ("when", "date"), ("how much", "amount"), ("how many", "amount"), ("who", "name"), ("where", "address"),
    ("what time", "time"), ("how long", "duration"), ("how many days", "duration"), ("how many weeks", "duration"),
    ("how many months", "duration"), ("how many years", "duration"))}


@dataclass
class Query:
    """What a question asks for: phrases to look for (token tuples with weights), value types."""

    text: str
    terms: list[str]
    fields: list[str]
    phrases: dict[tuple, float]
    types: tuple[str, ...]
    where: str | None
    hints: frozenset

    @property
    def vocab(self) -> set[str]:
        return {t for p in self.phrases for t in p}


def _positions(seq: Sequence[str], phrase: Sequence[str]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(seq) - n + 1) if tuple(seq[i:i + n]) == tuple(phrase)]


def _contains(seq: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(tuple(seq[i:i + n]) == tuple(phrase) for i in range(len(seq) - n + 1))


def _generic(name: str, toks: Sequence[str]) -> bool:
    """Whether field ``name`` is asked for only by wh-phrases or its own weak labels."""
    spec = vocabulary().fields[name]
    weak = set(spec["weak_labels"]) | set(_WH_TYPES)
    return all(a in weak for a in spec["ask"] if _contains(toks, a))


@functools.lru_cache(maxsize=256)
def parse_question(question: str) -> Query:
    """Turn a question into the phrases, value types and place its answer is likely to have."""
    voc = vocabulary()
    toks = tokens(question)
    terms = [t for t in toks if t not in voc.stopwords]
    # A field's ask word inside a wh-phrase that wants another kind does not ask for the field:
    # "how many days" asks for a duration, not for the date field's "day".
    cues = [(i, i + len(cue), kind) for cue, kind in _WH_TYPES.items() for i in _positions(toks, cue)]

    def asks(spec) -> bool:
        return any(not any(s <= i and i + len(a) <= e and kind not in spec["types"] for s, e, kind in cues)
                   for a in spec["ask"] for i in _positions(toks, a))

    fields = [name for name, spec in voc.fields.items() if asks(spec)]
    # "invoice date" asks for a date; the id field only when no more specific field matched.
    if "invoice_number" in fields and len(fields) > 1:
        specific = [a for a in voc.fields["invoice_number"]["ask"] if len(a) > 1]
        if not any(_contains(toks, a) for a in specific):
            fields.remove("invoice_number")
    # "How much is the tax?", "the tax amount": a field asked for only by a generic cue (a
    # wh-phrase, or one of its weak labels) yields to a field the question names that holds the
    # same kind of value.
    named = [n for n in fields if not _generic(n, toks)]
    fields = [n for n in fields if n in named or not any(
        set(voc.fields[n]["types"]) & set(voc.fields[m]["types"]) for m in named if m != n)]
    phrases: dict[tuple, float] = {}

    def add(p: tuple, w: float) -> None:
        if p and w > phrases.get(p, 0.0):
            phrases[p] = w

    for name in fields:
        for label in voc.fields[name]["labels"]:
            add(label, 1.0 if len(label) > 1 else (0.4 if len(label[0]) <= 2 or label[0] == "#" else 0.8))
        for label in voc.fields[name]["weak_labels"]:
            add(label, 0.5)
    weak = {lab for n in fields for lab in voc.fields[n]["weak_labels"]}
    for t in terms:
        add((t,), 0.5 if (t,) in weak else (0.6 if len(t) > 2 else 0.3))
        for syn in voc.synonyms.get((t,), []):
            add(syn, 0.5 if len(syn) == 1 and len(syn[0]) > 2 else (0.9 if len(syn) > 1 else 0.3))
    for a, b in zip(terms, terms[1:]):  # question bigrams and their synonym forms
        for pa in voc.synonyms.get((a,), [(a,)]) or [(a,)]:
            for pb in voc.synonyms.get((b,), [(b,)]) or [(b,)]:
                add(pa + pb, 1.0)
        add((a, b), 1.0)
    types: list[str] = []
    for name in fields:
        types.extend(t for t in voc.fields[name]["types"] if t not in types)
    for cue, typ in _WH_TYPES.items():
        if _contains(toks, cue) and typ not in types:
            types.append(typ)
    where = next((voc.fields[n]["where"] for n in fields if voc.fields[n]["where"]), None)
    hints = frozenset().union(*(voc.fields[n]["hints"] for n in fields)) if fields else frozenset()
    return Query(question, terms, fields, phrases, tuple(types), where, hints)


# What a question's own words say about the type, before the fields' types (which hold
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
    ``parse_question`` reads in it that is one of ``TYPES``, else ``"text"``."""
    words = " " + " ".join(tokens(question)) + " "
    for kind, cues in _CUES:
        if any(f" {' '.join(tokens(c)) or c} " in words for c in cues) or ("%" in cues and "%" in question):
            return kind
    for kind in parse_question(question).types:
        if kind in TYPES:
            return kind
    return "text"
