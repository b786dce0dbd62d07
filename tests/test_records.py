"""Records and their formats: key order, JSONL round trip, RFC 4180 CSV with the formula guard, table,
the format registry."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

from docvqa_cli import formats, grounding, records
from docvqa_cli.records import Answer

BOXES = [
    {"page": 2, "x0": 10.5, "y0": 20.0, "x1": 60.25, "y1": 31.0},
    {"page": 2, "x0": 10.5, "y0": 33.0, "x1": 48.0, "y1": 44.0},
]


def _answer(**kw) -> Answer:
    base = dict(doc="docs/收据.pdf", question_id="q1", question="What is the total?", answer="-11.80",
                confidence=0.873, page=2, boxes=BOXES, tiles_kept=3, tiles_total=6,
                model="HuggingFaceTB/SmolVLM-256M-Instruct", seconds=1.25, error=None)
    base.update(kw)
    return Answer(**base)


def test_keys_are_the_design_order():
    assert records.KEYS == ("doc", "question_id", "question", "answer", "confidence", "page", "boxes",
                            "tiles_kept", "tiles_total", "model", "seconds", "error",
                            "type", "value", "currency", "value_source", "value_note")  # typed, at the end
    assert formats.CSV_COLUMNS == ("doc", "question_id", "question", "answer", "confidence", "page",
                                   "x0", "y0", "x1", "y1", "boxes", "tiles_kept", "tiles_total",
                                   "model", "seconds", "error",
                                   "type", "value", "currency", "value_source", "value_note")


def test_jsonl_round_trip_keeps_order_and_non_latin_text():
    buf = io.StringIO()
    a = _answer(answer="合計 ¥1,200", question="Wie hoch ist die Summe?")
    b = _answer(question_id="q2", answer="", confidence=None, page=None, boxes=[], error="boom: a line")
    with formats.get("jsonl").writer(buf) as w:
        w.write(a)
        w.write(b)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert "合計" in lines[0] and "\\u" not in lines[0]  # UTF-8, no ASCII escapes
    back = [json.loads(line) for line in lines]
    assert [list(d) for d in back] == [list(records.KEYS)] * 2
    assert [Answer.from_dict(d) for d in back] == [a, b]
    assert back[1]["confidence"] is None and back[1]["boxes"] == []


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_header_flattened_first_box_and_rfc4180():
    buf = io.StringIO(newline="")
    w = formats.get("csv").writer(buf)
    w.write(_answer(question='Say "hi", then\nthe total?'))
    w.write(_answer(question_id="q2", answer="", confidence=None, page=None, boxes=[]))
    w.close()
    text = buf.getvalue()
    assert text.count("\r\n") == 3  # CRLF ends each row; the newline inside the quoted cell stays
    rows = _csv_rows(text)
    assert rows[0] == list(formats.CSV_COLUMNS)
    row = dict(zip(rows[0], rows[1]))
    assert row["question"] == 'Say "hi", then\nthe total?'
    assert row["answer"] == "-11.80"  # a plain negative number stays a number
    assert (row["page"], row["x0"], row["y0"], row["x1"], row["y1"]) == ("2", "10.5", "20.0", "60.25", "31.0")
    assert json.loads(row["boxes"]) == BOXES
    assert row["doc"] == "docs/收据.pdf"
    empty = dict(zip(rows[0], rows[2]))
    assert empty["confidence"] == "" and empty["page"] == "" and empty["x0"] == "" and empty["boxes"] == "[]"
    assert empty["error"] == ""


@pytest.mark.parametrize("cell", ["=SUM(A1:A9)", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\tx", "\r=1",
                                  "=1+1", "-", "+"])
def test_csv_formula_guard(cell):
    buf = io.StringIO(newline="")
    with formats.get("csv").writer(buf) as w:
        w.write(_answer(answer=cell, error=cell))
    row = dict(zip(*_csv_rows(buf.getvalue())))
    assert row["answer"] == "'" + cell
    assert row["error"] == "'" + cell
    raw = io.StringIO(newline="")
    with formats.get("csv", csv_raw=True).writer(raw) as w:
        w.write(_answer(answer=cell))
    assert dict(zip(*_csv_rows(raw.getvalue())))["answer"] == cell


@pytest.mark.parametrize("cell", ["-11.80", "+5", "-1,007.50", "1e5", "-0.5", "12/03/2018", "Total = 5"])
def test_csv_guard_leaves_numbers_and_plain_text(cell):
    buf = io.StringIO(newline="")
    with formats.get("csv").writer(buf) as w:
        w.write(_answer(answer=cell))
    assert dict(zip(*_csv_rows(buf.getvalue())))["answer"] == cell


@pytest.mark.parametrize("cell", ["'=x.pdf", "''=x.pdf", "'-5", "'@n", "'+total", "'\t", "=y.pdf", "-5",
                                  "'plain", "'", "''", "it's", "-11.80"])
def test_csv_cells_read_back_exactly_as_given(cell):
    """Resume compares the cells it reads back with the pairs it is asked for: the scan must
    undo exactly what the guard did, also for a value that already starts with a quote."""
    fmt = formats.get("csv")
    text = fmt.header() + fmt.record(_answer(doc=cell, question_id=cell))
    valid, rows, bad = fmt.scan(text.encode("utf-8"))
    assert (rows[0]["doc"], rows[0]["question_id"], bad) == (cell, cell, 0)
    assert formats.unguard_cell(formats.guard_cell(cell)) == cell
    raw = formats.get("csv", csv_raw=True)  # written as is, so read back as is
    assert raw.scan((raw.header() + raw.record(_answer(doc=cell))).encode("utf-8"))[1][0]["doc"] == cell


def test_record_text_escapes_the_bytes_of_a_name_that_is_not_utf8():
    name = os.fsdecode(b"docs/bad\xff\xfe.pdf")
    assert records.record_text(name) == "docs/bad\\xff\\xfe.pdf"
    assert records.record_text("docs/收据.pdf") == "docs/收据.pdf"
    assert records.record_text("lone \ud800") == "lone \\xed\\xa0\\x80"
    ans = records.writable(_answer(doc=name, error=f"{name}: corrupt"))
    assert (ans.doc, ans.error) == ("docs/bad\\xff\\xfe.pdf", "docs/bad\\xff\\xfe.pdf: corrupt")
    assert json.loads(formats.get("jsonl").record(ans).encode("utf-8"))["doc"] == ans.doc


def test_csv_record_text_has_no_header_for_appending():
    fmt = formats.get("csv")
    assert _csv_rows(fmt.record(_answer()))[0][0] == "docs/收据.pdf"
    assert _csv_rows(fmt.header()) == [list(formats.CSV_COLUMNS)]


def test_table_writer_prints_the_answers():
    buf = io.StringIO()
    with formats.get("table").writer(buf) as w:
        w.write(_answer(answer="EUR 1,157.40"))
        w.write(_answer(question_id="q2", answer="", boxes=[], error="page 3 is out of range"))
    out = buf.getvalue()
    assert "EUR 1,157.40" in out and "0.87" in out and "10,20,60,31 (+1)" in out
    assert "page 3 is out of range" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_the_registry_names_the_formats_and_rejects_unknown_ones_and_options():
    assert formats.names() == ("jsonl", "csv", "table")
    assert formats.names(resumable=True) == ("jsonl", "csv")  # what batch -o can append to
    with pytest.raises(ValueError, match="jsonl, csv, table"):
        formats.get("xml")
    with pytest.raises(TypeError, match="csv_rwa"):
        formats.get("csv", csv_rwa=True)
    assert formats.get("jsonl", csv_raw=True).name == "jsonl"  # another format's option is ignored


@pytest.mark.parametrize("name", formats.names(resumable=True))
def test_a_resumable_format_reads_back_what_it_wrote(name):
    fmt = formats.get(name)
    answers = [_answer(answer="=SUM(A1)"), _answer(question_id="q2", error="x: broken", boxes=[])]
    data = (fmt.header() + "".join(fmt.record(a) for a in answers)).encode("utf-8")
    valid, rows, bad = fmt.scan(data + data[-7:])  # plus a torn copy of the last record's end
    assert (valid, bad) == (len(data), 0)
    assert [(r["doc"], r["question_id"], r["answer"]) for r in rows] == [
        ("docs/收据.pdf", "q1", "=SUM(A1)"), ("docs/收据.pdf", "q2", "-11.80")]
    assert fmt.refuse(data[:1]) is None and formats.get("jsonl" if name == "csv" else "csv").refuse(data[:1])


def test_boxes_of_a_match():
    m = grounding.Match(3, [(1.234, 2.0, 3.0, 4.0), (1.0, 5.0, 3.0, 6.0)], 0.9)
    assert records.boxes_of(m) == [
        {"page": 3, "x0": 1.23, "y0": 2.0, "x1": 3.0, "y1": 4.0},
        {"page": 3, "x0": 1.0, "y0": 5.0, "x1": 3.0, "y1": 6.0},
    ]
    assert records.boxes_of(None) == []
