"""Typed answers on real documents: the type a question asks for, the normalised value read
from the page's printed words, day/month order from the document, ambiguous dates reported
as such, ``docq ground --type`` and question files with types."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import DEV_DATA, SAMPLES
from docvqa_cli import grounding, relevance, typed
from docvqa_cli.batch.questions import read_questions
from docvqa_cli.cli import main
from docvqa_cli.errors import UsageError
from docvqa_cli.reading import documents

INVOICES = DEV_DATA / "invoices"
needs_dev = pytest.mark.skipif(not INVOICES.is_dir(), reason=f"dev data not at {DEV_DATA}")


def _typed(doc, kind, text, date_order=None):
    pages = documents.load(str(doc))
    match = grounding.find_all(text, pages)[0]
    return typed.read_typed(kind, text, match, pages, date_order)


@pytest.mark.parametrize("question, kind", [
    ("What is the total amount?", "amount"),
    ("What is the subtotal?", "amount"),
    ("How many office chairs were bought?", "number"),
    ("What is the VAT rate?", "percent"),
    ("When is the invoice due?", "date"),
    ("What is the invoice number?", "id"),
    ("Within how many days must invoices be paid?", "duration"),
    ("What time was the purchase?", "time"),
    ("Who is the seller?", "text"),
])
def test_the_type_is_inferred_from_the_question(question, kind):
    assert relevance.infer_type(question) == kind


@needs_dev
@pytest.mark.parametrize("name", ["AmazonWebServices", "FlipkartInvoice", "QualityHosting", "oyo"])
def test_invoice_values_read_from_the_page_are_the_typed_truth(name):
    truth = json.loads((INVOICES / f"{name}.json").read_text())[0]
    pdf = INVOICES / f"{name}.pdf"
    amount = _typed(pdf, "amount", f"{truth['amount']:.2f}")
    assert float(amount.value) == truth["amount"] and amount.source == "page"
    assert amount.currency == truth["currency"]  # "$" with "US Dollars", "Rs" with GSTIN/India, "EUR"
    date = _typed(pdf, "date", truth["date"])
    assert (date.value, date.source) == (truth["date"], "page")
    ident = _typed(pdf, "id", truth["invoice_number"])
    assert ident.value == truth["invoice_number"].lstrip("#")


def test_contract_long_form_values():
    contract = SAMPLES / "contract.pdf"
    assert _typed(contract, "date", "2024-06-03").value == "2024-06-03"  # printed "3 June 2024"
    fee = _typed(contract, "amount", "EUR 4,750.00")
    assert (fee.value, fee.currency) == ("4750.00", "EUR")
    assert _typed(contract, "duration", "30 days").value == "30 days"  # "thirty (30) days"


def test_sample_invoice_id_number_and_percent():
    pdf = SAMPLES / "invoice.pdf"
    assert _typed(pdf, "id", "NW-2024-0173").value == "NW-2024-0173"
    assert _typed(pdf, "number", "2").value == 2
    vat = _typed(pdf, "percent", "20%")
    assert vat.value == 20 and vat.source == "page"


@needs_dev
def test_day_month_order_is_settled_by_another_date_on_the_document():
    # QualityHosting prints "01.05.14-31.05.14": 31.05.14 can only be day first, so
    # "01.05.14" is the 1st of May, not the 5th of January.
    t = _typed(INVOICES / "QualityHosting.pdf", "date", "2014-05-01")
    assert t.value == "2014-05-01" and "document" in t.note
    assert _typed(INVOICES / "QualityHosting.pdf", "date", "2014-05-01", date_order="mdy").value == "2014-05-01"


def test_an_ambiguous_date_is_reported_null_unless_date_order_settles_it():
    receipt = SAMPLES / "receipt.png"  # prints 02/05/2024 and no other date (OCR)
    t = _typed(receipt, "date", "2024-05-02")
    assert t.value is None and t.source is None
    assert t.note == f"{typed.AMBIGUOUS}: 2024-05-02 or 2024-02-05"
    assert _typed(receipt, "date", "2024-05-02", date_order="dmy").value == "2024-05-02"
    assert _typed(receipt, "date", "2024-05-02", date_order="mdy").value == "2024-02-05"


def test_the_answer_is_the_fallback_and_the_record_says_so():
    pages = documents.load(str(SAMPLES / "invoice.pdf"))
    t = typed.read_typed("amount", "GBP 9,999.99", None, pages)  # not printed on the page
    assert (t.value, t.currency, t.source) == ("9999.99", "GBP", "answer")
    none = typed.read_typed("date", "the seller", None, pages)
    assert none.value is None and none.source is None
    assert typed.read_typed("text", "Northwind", None, pages).value is None


def test_ground_type_reports_the_value_printed_on_the_page():
    res = CliRunner().invoke(main, ["ground", "--type", "date", str(SAMPLES / "contract.pdf"), "2026-06-02"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.splitlines()[0])
    assert out["type"] == "date" and out["matches"][0]["value"] == "2026-06-02"
    assert out["matches"][0]["page"] == 2
    bad = CliRunner().invoke(main, ["ground", "--type", "money", str(SAMPLES / "contract.pdf"), "x"])
    assert bad.exit_code == 2


def test_question_files_give_types_and_an_unknown_type_names_the_line(tmp_path):
    jl = tmp_path / "q.jsonl"
    jl.write_text('{"id": "total", "question": "Total?", "type": "Amount"}\n'
                  '{"id": "who", "question": "Who is the seller?"}\n')
    assert [(q.id, q.type) for q in read_questions(str(jl))] == [("total", "amount"), ("who", None)]
    csv_ = tmp_path / "q.csv"
    csv_.write_text("id,question,type\ntotal,What is the total?,amount\nday,When?,dte\n")
    with pytest.raises(UsageError, match=r"q\.csv:3: unknown type 'dte'"):
        read_questions(str(csv_))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "A?", "type": "date"}\n{"id": "b", "question": "B?", "type": "money"}\n')
    res = CliRunner().invoke(main, ["batch", str(bad), str(SAMPLES / "invoice.pdf")])
    assert res.exit_code == 2
    assert "bad.jsonl:2: unknown type 'money'" in res.output


@pytest.mark.parametrize("line, names", [
    ("ROUND D TOTAL (RM):", True), ("RM", True), ("All amounts in EUR", True), ("Currency: USD", True),
    ("BOOK TA .K (TAMAN DAYA) SDN BHD", False), ("we try to deliver", False),
])
def test_a_code_apart_from_amounts_names_the_currency_only_where_it_says_so(line, names):
    from docvqa_cli import values

    m = next(values.CURRENCY_RE.finditer(line))
    assert (m.group().isupper() and typed._names_currency(line, m)) == names


@pytest.mark.parametrize("issued, value, note", [
    ("Rechnungsdatum: 7. Mai 2014", "2014-05-02", "day/month order dmy from the document's language (its month names)"),
    ("Invoice date: 7 May 2014", None, f"{typed.AMBIGUOUS}: 2014-05-02 or 2014-02-05"),
])
def test_the_documents_language_settles_the_order_when_its_dates_do_not(tmp_path, issued, value, note):
    from conftest import write_invoice_pdf

    pdf = write_invoice_pdf(tmp_path / "x.pdf", lines=[((72, 72), issued, 10), ((72, 100), "Lieferung: 02.05.2014", 10)])
    t = _typed(pdf, "date", "2014-05-02")
    assert (t.value, t.note) == (value, note)
    assert _typed(pdf, "date", "2014-05-02", date_order="mdy").value == "2014-02-05"  # the user's flag first


def test_types_reach_the_records_through_ask_and_batch(tmp_path):
    """A real (tiny, random-weight) model answers: the records carry the type the user gave
    (``ask --type``, the question file's ``type``) or the one read from the question."""
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny", seed=0)
    args = ["--model", str(model), "--device", "cpu", "--max-new-tokens", "4"]
    doc = str(SAMPLES / "invoice.pdf")
    res = CliRunner().invoke(main, ["ask", doc, "What is the total amount?", "Who is the seller?", "--type", "id",
                                    "--date-order", "dmy", *args])
    assert res.exit_code in (0, 1), res.output
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["type"] for r in recs] == ["id", "id"]
    assert list(recs[0])[-5:] == ["type", "value", "currency", "value_source", "value_note"]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"id": "who", "question": "Who is the seller?", "type": "date"}\n'
                     '{"id": "total", "question": "What is the total amount?"}\n')
    res = CliRunner().invoke(main, ["batch", str(qfile), doc, "--jobs", "0", "-q", *args])
    assert res.exit_code in (0, 1), res.output
    assert {r["question_id"]: r["type"] for r in map(json.loads, res.stdout.splitlines())} == \
        {"who": "date", "total": "amount"}
