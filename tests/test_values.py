"""The values module: one parser per kind, the table of cases where tile scoring and grounding
used to disagree, day/month order from a document, and the line grouper on a real PDF."""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import write_invoice_pdf
from docvqa_cli import values
from docvqa_cli.reading import documents
from docvqa_cli.values import Amount, Date, Duration, Id, Percent, Time

# What relevance.py and grounding.py read differently before the values module (issue 12):
# (printed text, kind, normalised value).
DISAGREEMENTS = [
    ("15 gennaio 2024", "date", "2024-01-15"),  # grounding: a date; tile scoring: not
    ("15 dez 2024", "date", "2024-12-15"),  # tile scoring: a date; grounding: not
    ("15. Dez. 2024", "date", "2024-12-15"),
    ("15 de mayo de 2024", "date", "2024-05-15"),
    ("the 20th day of May, 2014", "date", "2014-05-20"),
    ("1er janvier 2024", "date", "2024-01-01"),
    ("15 Mac 2019", "date", "2019-03-15"),  # Malay
    ("May 2014", "date", "2014-05"),  # a month: tile scoring only
    ("KES 1,250.00", "amount", ("1250.00", "KES")),  # tile scoring: an amount; grounding: none
    ("₹1,23,456.00", "amount", ("123456.00", "INR")),  # Indian grouping: neither
    ("-11.80", "amount", ("-11.80", None)),  # grounding read 11.80
    ("(11.80)", "amount", ("-11.80", None)),
    ("11.80-", "amount", ("-11.80", None)),
    ("1.250,00 €", "amount", ("1250.00", "EUR")),
    ("RM9.00", "amount", ("9.00", "MYR")),
    ("$4.11", "amount", ("4.11", None)),  # "$" names no single currency
    ("1'234.50 CHF", "amount", ("1234.50", "CHF")),
    ("thirty (30) days", "duration", ("30", "day")),
    ("2 years", "duration", ("2", "year")),
    ("five (5) business days", "duration", ("5", "day")),
    ("twenty-four (24) months", "duration", ("24", "month")),
    ("7,5 %", "percent", "7.5"),
    ("15 percent", "percent", "15"),
    ("INV-20417", "id", "INV-20417"),
    ("No. 2017/88", "id", "2017/88"),
    ("8:05 pm", "time", "20:05"),
]


def _normal(v):
    if isinstance(v, Date):
        return v.iso
    if isinstance(v, Amount):
        return (str(v.value), v.currency)
    if isinstance(v, Duration):
        return (str(v.count), v.unit)
    if isinstance(v, Percent):
        return str(v.value)
    if isinstance(v, Id):
        return v.text
    if isinstance(v, Time):
        return v.iso
    return str(v.value)


@pytest.mark.parametrize("text,kind,expected", DISAGREEMENTS)
def test_agreement_table(text, kind, expected):
    v = values.parse(text)
    assert v is not None and v.kind == kind, (text, v)
    assert _normal(v) == expected
    assert _normal(values.parse(text, kind)) == expected
    found = values.find_values(f"Label: {text} end")
    assert [f.kind for f in found] == [kind], found
    assert _normal(found[0].value) == expected


def test_amount_marks_and_readings():
    for text in ("1,007.50", "1.007,50", "1 007,50", "1007.50", "EUR 1,007.50"):
        assert values.parse_amount(text).value == Decimal("1007.50"), text
    assert values.parse_amount("11. 80").value == Decimal("11.80")  # OCR's space after the mark
    assert values.parse_amount("1,007").readings == (Decimal("1007"), Decimal("1.007"))  # both kept
    assert values.parse_amount("1,23,45,678").value == Decimal("12345678")
    assert values.parse_amount("12,34,5") is None  # no grouping prints that
    assert values.parse_amount("INV-20417") is None and values.parse_amount("Total") is None
    assert values.parse_amount("(11.80") is None  # unbalanced
    # the same amount compares equal whatever the marks; another value never does
    assert values.same_value(values.parse("1.007,50"), values.parse("EUR 1,007.50"))
    assert not values.same_value(values.parse("-11.80"), values.parse("11.80"))
    assert values.same_value(values.parse("319"), values.parse("319.00"))
    assert not values.same_value(values.parse("1,157.41"), values.parse("1,157.40"))


def test_dates_ambiguity_and_document_order():
    d = values.parse_date("02/12/2017")
    assert d.ambiguous and d.iso is None and set(d.candidates) == {"2017-12-02", "2017-02-12"}
    assert values.parse_date("05/05/2020").iso == "2020-05-05"  # both readings agree
    assert values.parse_date("31/13/2017") is None and values.parse_date("Invoice 2017") is None
    assert values.parse_date("31/12/2017 10:45").iso == "2017-12-31"
    assert values.parse_date("Page 9 of 5") is None
    # a day above 12 elsewhere on the document settles the order; nothing settles nothing
    doc = [values.parse_date(t) for t in ("02/12/2017", "25/12/2017", "03/04/2018")]
    assert values.infer_date_order(doc) == "dmy"
    assert [x.iso for x in values.resolve_dates(doc)] == ["2017-12-02", "2017-12-25", "2018-04-03"]
    us = [values.parse_date(t) for t in ("02/12/2017", "12/25/2017")]
    assert values.infer_date_order(us) == "mdy" and values.resolve_dates(us)[0].iso == "2017-02-12"
    alone = [values.parse_date("02/12/2017"), values.parse_date("05/05/2020"), values.parse_date("2017-12-31")]
    assert values.infer_date_order(alone) is None
    assert values.resolve_dates(alone)[0].ambiguous  # stays ambiguous: never a guess
    assert values.resolve_dates(alone, default="mdy")[0].iso == "2017-02-12"  # the user's order


def test_durations_numbers_ids():
    assert values.parse_duration("ten (30) days") is None  # words and digits disagree
    assert values.parse_duration("years") is None
    assert not values.same_value(values.parse("60 days"), values.parse("thirty (30) days"))
    assert values.same_value(values.parse("5 years"), values.parse("five (5) years"))
    assert values.parse_number("-3").value == Decimal("-3")
    assert values.parse_id("#4521").key == "4521"
    assert values.same_value(values.parse("4521"), values.parse_id("#4521"))  # an id printed bare
    assert values.parse("hello") is None and values.parse("") is None and values.parse("   ") is None
    with pytest.raises(ValueError, match="unknown value kind"):
        values.parse("1", "colour")


def test_find_values_in_text():
    text = "Page 9 of 5 · Total due: EUR 1,157.40 on 31/12/2017 10:45 (Ref INV-20417, GST 6%)"
    kinds = [(f.kind, text[f.start:f.end]) for f in values.find_values(text)]
    assert kinds == [("number", "9"), ("number", "5"), ("amount", "EUR 1,157.40"), ("date", "31/12/2017"),
                     ("time", "10:45"), ("id", "INV-20417"), ("percent", "6%")]


@pytest.mark.parametrize("text", ["", " ", "x" * 10_000, "١٢٣٫٤٥", "𝟙𝟚𝟛", "\u200b\u0301", "%%%", "(((", "--1--"])
def test_any_text_is_safe(text):
    values.parse(text)
    values.find_values(text)
    for kind in values.KINDS:
        values.parse(text, kind)


def test_vocabulary_covers_fields_json():
    raw = values.fields_json()
    assert "months" not in raw and "currencies" not in raw  # one vocabulary: the values module's
    for m in ("jan", "january", "märz", "mac", "ogos", "okt", "dez", "gennaio", "mei"):  # relevance's old list
        assert values.month_number(m), m
    for c in ("$", "€", "₹", "rm", "rs", "inr", "usd", "kes", "ksh", "euro"):
        assert c in values.CURRENCIES, c
    assert "amount due" in values.field_labels()["total"]
    assert values.month_number("setting") is None and values.month_number("Sept.") == 9


def test_group_lines_on_a_real_pdf(tmp_path):
    lines = [((72, 72), "Invoice No: INV-20417", 10), ((300, 72), "Total: 9.00", 10), ((72, 120), "Second", 10)]
    page = documents.load(str(write_invoice_pdf(tmp_path / "l.pdf", lines)))[0]
    grouped = values.group_lines(page.words)
    texts = [ln.text for ln in grouped]
    assert texts[-1] == "Second" and any("INV-20417" in t for t in texts)
    for ln in grouped:
        assert [page.words[i] for i in ln.indices] == list(ln.words)
        for w, (a, b) in zip(ln.words, ln.spans):
            assert ln.text[a:b] == w.text
        found = values.find_values(ln.text)
        for f in found:
            assert ln.words_in(f.start, f.end)


def test_enumerations_in_parentheses_are_not_negative():
    found = values.find_values("clause (1) and item (12) of 3 pages")
    assert [str(f.value.value) for f in found] == ["1", "12", "3"]
    assert [f.value.value for f in values.find_values("a refund of (11.80) and RM (4.00)")][0] == Decimal("-11.80")
