"""``docq export --wide``: one row per document from real records (the golden batch output of
a real tiny-model run, killed and resumed: duplicates and a torn tail), typed values from the
sample invoice, field-file checks as flags, and bad field files refused before any table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, SAMPLES
from docvqa_cli import formats, grounding, relevance, typed
from docvqa_cli.cli import main
from docvqa_cli.reading import documents
from docvqa_cli.records import Answer

GOLDEN = ROOT / "tests" / "golden"


def _run(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline="")))


@pytest.mark.parametrize("name", ["batch.jsonl", "batch.csv"])
def test_a_killed_and_resumed_batch_gives_one_row_per_document(tmp_path, name):
    real = (GOLDEN / name).read_bytes()
    head, *lines = real.splitlines(keepends=True) if name.endswith(".csv") else (b"", *real.splitlines(True))
    # A first run killed after 5 records (the resume cuts its torn 6th), resumed: it wrote the
    # rest; records of two of the pairs written again (two outputs joined, or a pair answered
    # anew), then a run killed in the middle of a line.
    resumed = head + b"".join(lines[:5]) + b"".join(lines[5:]) + lines[6] + lines[7] + lines[8][:40]
    path = tmp_path / name
    path.write_bytes(resumed)
    res = _run(path, "--wide")
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert [r["doc"] for r in rows] == ["sample_docs/invoice.pdf", "sample_docs/receipt.png", "sample_docs/contract.pdf"]
    assert list(rows[0])[:5] == ["doc", "q1", "q1_page", "q1_confidence", "q1_currency"]
    assert rows[0]["q3"] == "4567\ufffd"  # q3 ("Who is the seller?") is text: the answer
    assert rows[0]["q1"] == ""  # an amount that cannot be read: empty, never the answer text


def _invoice_records(tmp_path) -> Path:
    """Records whose typed values are read from the real sample invoice, as ``ask`` makes them."""
    pages = documents.load(str(SAMPLES / "invoice.pdf"))
    qs = [("subtotal", "What is the subtotal?", "1,358.10"), ("tax", "How much VAT is charged?", "271.62"),
          ("total", "What is the total amount?", "1,629.72"), ("date", "What is the invoice date?", "18 March 2024"),
          ("seller", "Who is the seller?", "Northwind Office Supplies Ltd")]
    out = io.StringIO()
    w = formats.get("jsonl").writer(out)
    for doc, total in (("good.pdf", "1,629.72"), ("bad.pdf", "1,600.00")):
        for qid, q, ans in qs:
            ans = total if qid == "total" else ans
            m = grounding.locate(ans, pages)
            r = Answer(doc=doc, question_id=qid, question=q, answer=ans, page=m.page if m else None)
            r.set_typed(typed.read_typed(relevance.infer_type(q), ans, m, pages))
            w.write(r)
    path = tmp_path / "records.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def test_wide_values_and_checks_flag_without_changing_values(tmp_path):
    records = _invoice_records(tmp_path)
    fields = tmp_path / "fields.jsonl"
    fields.write_text("\n".join(json.dumps(e) for e in [
        {"id": "seller", "question": "Who is the seller?"},
        {"id": "date", "question": "What is the invoice date?", "type": "date"},
        {"id": "subtotal", "question": "What is the subtotal?", "type": "amount"},
        {"id": "tax", "question": "How much VAT is charged?", "type": "amount"},
        {"id": "total", "question": "What is the total amount?", "type": "amount"},
        {"id": "sums", "check": "total = subtotal + tax", "tolerance": 0.01},
        {"id": "past", "check": "date <= today"},
    ]) + "\n")
    out = tmp_path / "table.csv"
    res = _run(records, "--wide", "--fields", fields, "-o", out, "--bom")
    assert res.exit_code == 0, res.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    good, bad = _rows(raw.decode("utf-8"))
    assert list(good)[:4] == ["doc", "seller", "seller_page", "seller_confidence"]
    assert (good["total"], good["total_currency"], good["date"]) == ("1629.72", "GBP", "2024-03-18")
    assert good["seller"] == "Northwind Office Supplies Ltd" and good["total_page"] == "1"
    assert (good["check_sums"], good["check_past"]) == ("ok", "ok")
    assert (bad["total"], bad["check_sums"]) == ("1600.00", "failed")  # flagged, the value kept


def test_formula_guard_in_the_wide_table(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(Answer(doc="a.pdf", question_id="who", question="Who?", answer="=HYPERLINK(1)",
                                      type="text").to_dict()) + "\n")
    assert _rows(_run(path, "--wide").stdout)[0]["who"] == "'=HYPERLINK(1)"
    assert _rows(_run(path, "--wide", "--csv-raw").stdout)[0]["who"] == "=HYPERLINK(1)"


@pytest.mark.parametrize("entries, fragment", [
    ([{"id": "total", "question": "Total?"}, {"id": "total", "question": "Again?"}], "fields.jsonl:2: the id 'total' is used twice"),
    ([{"id": "total", "question": "Total?"}, {"id": "sums", "check": "total = subtotal + tax"}],
     "fields.jsonl:2: check 'sums' names 'subtotal'"),
    ([{"id": "total", "question": "Total?"}, {"id": "c", "check": "total"}], "fields.jsonl:2: check 'total' has no comparison"),
    ([{"id": "total", "question": "Total?", "type": "money"}], "fields.jsonl:1: unknown type 'money'"),
])
def test_a_bad_field_file_is_a_usage_error_naming_the_line_and_writes_nothing(tmp_path, entries, fragment):
    records = tmp_path / "r.jsonl"
    records.write_bytes((GOLDEN / "batch.jsonl").read_bytes())
    fields = tmp_path / "fields.jsonl"
    fields.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    out = tmp_path / "table.csv"
    res = _run(records, "--wide", "--fields", fields, "-o", out)
    assert res.exit_code == 2
    assert fragment in res.output
    assert not out.exists() and not list(tmp_path.glob(".docq-export-*"))


def test_export_refuses_to_replace_a_file_without_overwrite_and_needs_wide(tmp_path):
    out = tmp_path / "table.csv"
    out.write_text("keep me")
    res = _run(GOLDEN / "batch.jsonl", "--wide", "-o", out)
    assert res.exit_code == 2 and out.read_text() == "keep me"
    assert _run(GOLDEN / "batch.jsonl", "--wide", "-o", out, "--overwrite").exit_code == 0
    assert out.read_text().startswith("doc,q1,")
    assert _run(GOLDEN / "batch.jsonl").exit_code == 2


def test_a_batch_does_not_resume_a_csv_of_other_columns_but_export_reads_it(tmp_path):
    from docvqa_cli import batch
    from docvqa_cli.errors import UsageError

    old = tmp_path / "old.csv"  # what docq wrote before the typed keys
    old.write_text("doc,question_id,question,answer,confidence,page,x0,y0,x1,y1,boxes,tiles_kept,tiles_total,"
                   "model,seconds,error\r\na.pdf,q1,Who?,Northwind,0.5,1,,,,,[],1,2,m,0.1,\r\n", newline="")
    before = old.read_bytes()
    with pytest.raises(UsageError, match="columns are not the ones docq writes now"):
        batch.Output(str(old), formats.get("csv"))
    assert old.read_bytes() == before
    assert _rows(_run(old, "--wide").stdout) == [{"doc": "a.pdf", "q1": "Northwind", "q1_page": "1",
                                                  "q1_confidence": "0.5"}]
    new = tmp_path / "new.csv"
    new.write_bytes((GOLDEN / "batch.csv").read_bytes())
    batch.Output(str(new), formats.get("csv")).close()  # today's columns: resumed


def test_checks_compare_dates_and_sums_and_say_missing():
    from docvqa_cli import checks
    from docvqa_cli.batch.questions import CheckEntry

    sums, past = checks.compile_checks([CheckEntry("sums", "total = subtotal + tax - 5", "0.005", 3),
                                        CheckEntry("past", "date <= today", None, 4)],
                                       ["total", "subtotal", "tax", "date"], "f.jsonl")
    assert sums.flag({"total": "95.00", "subtotal": "80", "tax": 20}) == "ok"
    assert sums.flag({"total": "95.01", "subtotal": "80", "tax": 20}) == "failed"  # outside 0.005
    assert sums.flag({"total": None, "subtotal": "80", "tax": 20}) == "missing"
    assert past.flag({"date": "2024-03-18"}) == "ok"
    assert past.flag({"date": "2999-01-01"}) == "failed"


def test_ask_refuses_an_unknown_type():
    res = CliRunner().invoke(main, ["ask", str(SAMPLES / "invoice.pdf"), "Total?", "--type", "money"])
    assert res.exit_code == 2 and "money" in res.output


def test_a_csv_field_file_with_check_columns(tmp_path):
    records = _invoice_records(tmp_path)
    fields = tmp_path / "fields.csv"
    fields.write_text("id,question,type,check,tolerance\n"
                      "total,What is the total amount?,amount,,\n"
                      "subtotal,What is the subtotal?,amount,,\n"
                      "tax,How much VAT is charged?,amount,,\n"
                      "sums,,,total = subtotal + tax,0.01\n")
    good, bad = _rows(_run(records, "--wide", "--fields", fields).stdout)
    assert list(good) == ["doc", "total", "total_page", "total_confidence", "total_currency", "subtotal",
                          "subtotal_page", "subtotal_confidence", "subtotal_currency", "tax", "tax_page",
                          "tax_confidence", "tax_currency", "check_sums"]
    assert (good["check_sums"], bad["check_sums"]) == ("ok", "failed")
    fields.write_text("id,question,check\ntotal,Total?,\nsums,,total = net + 1\n")
    res = _run(records, "--wide", "--fields", fields)
    assert res.exit_code == 2 and "fields.csv:3: check 'sums' names 'net'" in res.output and res.stdout == ""
