"""docq batch: question files, document discovery, resume and repair, the run loop.

The unit tests of the run loop inject ``stand_in_answer``: a test double for the model
step that echoes facts of the pages it was given (never presented as a model answer).
The tests that run a real (tiny, random-weight) model through ``docq batch`` are below.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pymupdf
import pytest

from conftest import write_invoice_pdf, write_scan
from docvqa_cli import batch, formats, records
from docvqa_cli.errors import UsageError
from docvqa_cli.options import AnswerOptions, ModelOptions
from docvqa_cli.reading import documents


# --- helpers ----------------------------------------------------------------------------

def stand_in_answer(pages, questions, keep):
    """Test double of the model step: one record per question, made from the pages' facts."""
    for qid, text in questions:
        total = len(pages) * 4
        kept = max(1, int(total * keep))
        yield records.Answer(doc=pages[0].doc, question_id=qid, question=text,
                             answer=f"{len(pages)} page(s), {len(pages[0].words)} words",
                             tiles_kept=kept, tiles_total=total, model="stand-in")


class Step:
    """Test double of ``pipeline.Answerer``, the answer step: its answers come from ``fn``
    (``stand_in_answer`` or a variant), one document at a time."""

    batch_size = 1
    model_name = None

    def __init__(self, fn):
        self.fn = fn

    def answer(self, pages, questions, keep):
        return self.fn(pages, questions, keep)

    def answer_many(self, items, keep):
        return [list(self.fn(pages, questions, keep)) for _, pages, questions in items]


class CountingLoad:
    """documents.load, counting calls per path (thread workers share it)."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, path):
        with self.lock:
            self.calls[path] = self.calls.get(path, 0) + 1
        return documents.load(path, ocr=None)


def run_batch(tmp_path, questions, docs, out, fmt="jsonl", answer=stand_in_answer, jobs=1,
              executor="thread", load=None, overwrite=False):
    output = batch.Output(str(out), formats.get(fmt), overwrite=overwrite)
    try:
        summary = batch.run(questions, docs, load=load or CountingLoad(), answerer=lambda: Step(answer),
                            output=output, jobs=jobs,
                            executor=executor, stderr=io.StringIO())
    finally:
        output.close()
    return summary


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def make_folder(root: Path) -> dict[str, str]:
    """Good and bad documents; returns {path: expected error fragment or ''}."""
    root.mkdir(parents=True, exist_ok=True)
    good = write_invoice_pdf(root / "invoice.pdf")
    (root / "sub").mkdir()
    scan = write_scan(root / "sub" / "scan.png")
    noext = root / "sub" / "scan_without_extension"
    noext.write_bytes(scan.read_bytes())
    corrupt = root / "corrupt.pdf"
    corrupt.write_bytes(good.read_bytes()[:300])
    empty = root / "empty.pdf"
    empty.write_bytes(b"")
    text = root / "notes.pdf"
    text.write_text("this is a text file, not a PDF\n")
    enc = root / "locked.pdf"
    doc = pymupdf.open(good)
    doc.save(enc, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="o", user_pw="secret")
    doc.close()
    (root / "README.txt").write_text("not a document and not named like one\n")
    (root / ".hidden.pdf").write_bytes(good.read_bytes())
    return {
        str(good): "",
        str(scan): "",
        str(noext): "",
        str(corrupt): "corrupt",
        str(empty): "empty",
        str(text): "not a PDF",
        str(enc): "encrypted",
    }


QUESTIONS = [batch.Question("q1", "What is the total amount?"), batch.Question("q2", "What is the date?")]


# --- question files ------------------------------------------------------------------------

def test_questions_from_text_jsonl_and_csv(tmp_path):
    txt = tmp_path / "q.txt"
    txt.write_text("What is the total?\n\n  What is the date?  \n")
    assert batch.read_questions(str(txt)) == [batch.Question("q1", "What is the total?"),
                                               batch.Question("q2", "What is the date?")]
    jl = tmp_path / "q.jsonl"
    jl.write_text('{"id": "total", "question": "What is the total?"}\n\n{"id": 7, "question": "Date?"}\n')
    assert [(q.id, q.text) for q in batch.read_questions(str(jl))] == [("total", "What is the total?"), ("7", "Date?")]
    cs = tmp_path / "q.csv"
    cs.write_bytes('\ufeffid,question\nt,"Total, with VAT?"\nd,Date?\n'.encode("utf-8"))
    assert [(q.id, q.text) for q in batch.read_questions(str(cs))] == [("t", "Total, with VAT?"), ("d", "Date?")]


@pytest.mark.parametrize("name,content,fragment", [
    ("empty.txt", "\n\n", "no questions"),
    ("dup.jsonl", '{"id": "a", "question": "x"}\n{"id": "a", "question": "y"}\n', "used twice"),
    ("cols.csv", "name,text\na,b\n", "id and question"),
    ("bad.jsonl", '{"id": "a"}\n', "needs"),
    ("broken.jsonl", '{"id": \n', "not JSON"),
])
def test_bad_question_files_are_usage_errors(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=fragment):
        batch.read_questions(str(path))


def test_a_csv_question_with_an_unquoted_comma_is_read_whole_or_refused(tmp_path):
    cs = tmp_path / "q.csv"
    cs.write_text("id,question\nt,What is the total, with VAT?\nd,Date?\n")
    assert [(q.id, q.text) for q in batch.read_questions(str(cs))] == [
        ("t", "What is the total, with VAT?"), ("d", "Date?")]
    typed = tmp_path / "typed.csv"  # a column after the question: the comma cannot be placed
    typed.write_text("id,question,type\nd,Date?,date\nt,Total, with VAT?,amount\n")
    with pytest.raises(UsageError, match=r"typed.csv:3: more fields than the header"):
        batch.read_questions(str(typed))


@pytest.mark.parametrize("sep", ["\u0085", "\u2028", "\u2029"])
def test_unicode_line_separators_stay_inside_a_question(tmp_path, sep):
    txt = tmp_path / "q.txt"
    txt.write_text(f"What is{sep}the total?\r\nWhat is the date?\rWho?\n", encoding="utf-8", newline="")
    assert [(q.id, q.text, q.line) for q in batch.read_questions(str(txt))] == [
        ("q1", f"What is{sep}the total?", 1), ("q2", "What is the date?", 2), ("q3", "Who?", 3)]
    jl = tmp_path / "q.jsonl"
    jl.write_text(f'{{"id": "a", "question": "Total{sep}due?"}}\n{{"id": "b", "question": "Date?"}}\n',
                  encoding="utf-8", newline="")
    assert [(q.id, q.text) for q in batch.read_questions(str(jl))] == [("a", f"Total{sep}due?"), ("b", "Date?")]


# --- discovery -----------------------------------------------------------------------------

def test_find_documents_by_content_recursively_globs_and_stdin(tmp_path):
    expected = make_folder(tmp_path / "docs")
    found = batch.find_documents([str(tmp_path / "docs")])
    assert sorted(found) == sorted(expected)  # README.txt and the hidden file are left out
    assert str(tmp_path / "docs" / "sub" / "scan_without_extension") in found  # by its bytes
    # A glob keeps documents only; a literal path is always kept (even a missing one).
    globbed = batch.find_documents([str(tmp_path / "docs" / "*")])
    assert str(tmp_path / "docs" / "README.txt") not in globbed
    assert str(tmp_path / "docs" / "invoice.pdf") in globbed
    missing = str(tmp_path / "nope.pdf")
    assert batch.find_documents([missing]) == [missing]
    # - reads paths from stdin; repeats are dropped, order is kept.
    stdin = io.StringIO(f"{tmp_path / 'docs' / 'invoice.pdf'}\n\n{tmp_path / 'docs' / 'empty.pdf'}\n")
    got = batch.find_documents([str(tmp_path / "docs" / "invoice.pdf"), "-"], stdin=stdin)
    assert got == [str(tmp_path / "docs" / "invoice.pdf"), str(tmp_path / "docs" / "empty.pdf")]
    warnings = []
    assert batch.find_documents([str(tmp_path / "*.nothing")], warn=warnings.append) == []
    assert "matches no file" in warnings[0]


# --- output repair and resume ----------------------------------------------------------------

def sample_answers(n=4) -> list[records.Answer]:
    out = []
    for i in range(n):
        out.append(records.Answer(
            doc=f"docs/straße {i}.pdf", question_id=f"q{i % 2 + 1}", question="Wie hoch ist die Summe?",
            answer=["€ 1.007,50", 'two\nlines "quoted"', "=SUM(A1)", "-11.80"][i % 4],
            confidence=0.5, page=1, boxes=[{"page": 1, "x0": 1.0, "y0": 2.0, "x1": 3.0, "y1": 4.0}],
            tiles_kept=2, tiles_total=4, model="m", seconds=0.1, error=None if i != 2 else "x: broken"))
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_cut_at_any_byte_is_repaired_to_its_last_whole_record(tmp_path, fmt, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what this tests; speed is
    ser = formats.get(fmt)
    parts = [ser.record(a) for a in sample_answers()]
    if fmt == "csv":
        parts[0] = ser.header() + parts[0]
    full = "".join(parts).encode("utf-8")
    ends = [0]
    for p in parts:
        ends.append(ends[-1] + len(p.encode("utf-8")))
    if fmt == "csv":
        ends.insert(1, len(ser.header().encode()))  # a header alone is a whole prefix
    out = tmp_path / f"out.{fmt}"
    for cut in range(len(full) + 1):
        out.write_bytes(full[:cut])
        o = batch.Output(str(out), ser)
        o.close()
        kept = max(e for e in ends if e <= cut)
        assert out.read_bytes() == full[:kept], cut
        assert o.done.repaired_bytes == cut - kept
        n_records = sum(1 for e in ends[1:] if e <= cut) - (1 if fmt == "csv" and cut >= ends[1] else 0)
        assert len(o.done.pairs) == len({(a.doc, a.question_id) for a in sample_answers()[:n_records]}), cut
    # The last state is whole; its error record is known as one.
    assert o.done.pairs[("docs/straße 2.pdf", "q1")][1] is True
    assert o.done.pairs[("docs/straße 3.pdf", "q2")][1] is False


def test_overwrite_starts_over_and_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"doc": "a", "question_id": "q1"}\n')
    o = batch.Output(str(out), formats.get("jsonl"))
    assert ("a", "q1") in o.done.pairs
    with pytest.raises(UsageError, match="another docq batch"):
        batch.Output(str(out), formats.get("jsonl"))
    o.close()
    o = batch.Output(str(out), formats.get("jsonl"), overwrite=True)
    o.close()
    assert out.read_bytes() == b""
    out.write_text('{"doc": "a", "question_id": "q1"}\n')
    with pytest.raises(UsageError, match="JSONL"):
        batch.Output(str(out), formats.get("csv"))


# --- the run loop (with the stand-in answer step) ---------------------------------------------

def test_one_record_per_pair_errors_as_records_pages_loaded_once(tmp_path):
    expected = make_folder(tmp_path / "docs")
    docs = batch.find_documents([str(tmp_path / "docs")]) + [str(tmp_path / "missing.pdf")]
    expected[str(tmp_path / "missing.pdf")] = "no such file"
    load = CountingLoad()
    out = tmp_path / "out.jsonl"
    summary = run_batch(tmp_path, QUESTIONS, docs, out, load=load, jobs=2)
    rows = read_jsonl(out)
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted((d, q.id) for d in docs for q in QUESTIONS)
    assert [r["doc"] for r in rows][::2] == docs  # document order is kept
    for r in rows:
        assert list(r) == list(records.KEYS)
        frag = expected[r["doc"]]
        if frag:
            assert frag in r["error"] and r["doc"] in r["error"] and "\n" not in r["error"]
        else:
            assert r["error"] is None and r["answer"]
    assert set(load.calls.values()) == {1}  # each document opened once for both questions
    assert summary.errors == 2 * sum(1 for f in expected.values() if f)
    assert summary.answered == 2 * sum(1 for f in expected.values() if not f)
    assert summary.job_has_errors
    # The same run again does nothing and still reports the job's errors.
    load2 = CountingLoad()
    again = run_batch(tmp_path, QUESTIONS, docs, out, load=load2)
    assert again.answered == again.errors == 0 and again.skipped == len(rows)
    assert load2.calls == {} and again.job_has_errors
    assert read_jsonl(out) == rows


@pytest.mark.parametrize("jobs,executor", [(0, "thread"), (2, "thread"), (2, "process")])
def test_workers_give_the_same_records(tmp_path, jobs, executor):
    docs = [str(write_invoice_pdf(tmp_path / f"d{i}.pdf")) for i in range(4)] + [str(tmp_path / "gone.pdf")]
    out = tmp_path / "out.jsonl"
    load = CountingLoad() if executor == "thread" else _plain_load
    run_batch(tmp_path, QUESTIONS, docs, out, jobs=jobs, executor=executor, load=load)
    rows = read_jsonl(out)
    assert [(r["doc"], r["question_id"]) for r in rows] == [(d, q.id) for d in docs for q in QUESTIONS]
    assert [r["error"] is not None for r in rows] == [False] * 8 + [True] * 2


def _plain_load(path):
    return documents.load(path, ocr=None)


def test_a_question_file_that_gained_a_question_and_csv_resume(tmp_path):
    docs = [str(write_invoice_pdf(tmp_path / f"d{i}.pdf")) for i in range(3)]
    out = tmp_path / "out.csv"
    run_batch(tmp_path, QUESTIONS[:1], docs, out, fmt="csv")
    more = QUESTIONS + [batch.Question("q3", "Who is the seller?")]
    load = CountingLoad()
    summary = run_batch(tmp_path, more, docs, out, fmt="csv", load=load)
    assert summary.skipped == 3 and summary.answered == 6
    assert set(load.calls.values()) == {1}
    import csv

    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted((d, q.id) for d in docs for q in more)
    assert open(out, encoding="utf-8").read().count("doc,question_id") == 1  # one header


def cuda_oom(message: str) -> BaseException:
    """torch's own CUDA out-of-memory error (made without a GPU): batch knows it by its type."""
    import torch

    return torch.OutOfMemoryError(message)


def test_out_of_memory_retries_with_fewer_tiles_then_records_the_error(tmp_path):
    docs = [str(write_invoice_pdf(tmp_path / "d.pdf"))]
    keeps = []

    def tight(pages, questions, keep):  # test double: "fits" only at keep <= 0.25
        for qid, text in questions:
            keeps.append(keep)
            if keep > 0.25 and qid == "q1":
                raise cuda_oom("CUDA out of memory. Tried to allocate 2.00 GiB")
            yield from stand_in_answer(pages, [(qid, text)], keep)

    out = tmp_path / "out.jsonl"
    run_batch(tmp_path, QUESTIONS, docs, out, answer=tight)
    rows = read_jsonl(out)
    assert [r["question_id"] for r in rows] == ["q1", "q2"] and all(r["error"] is None for r in rows)
    assert keeps[:3] == [0.5, 0.25, 0.5]  # q1 failed, q1 again with half the tiles, then q2
    assert rows[0]["tiles_kept"] < rows[1]["tiles_kept"]

    def never(pages, questions, keep):
        raise cuda_oom("CUDA out of memory")
        yield

    out2 = tmp_path / "out2.jsonl"
    summary = run_batch(tmp_path, QUESTIONS, docs, out2, answer=never)
    rows = read_jsonl(out2)
    assert len(rows) == 2 and all("out of memory" in r["error"] for r in rows)
    assert summary.errors == 2


def test_ctrl_c_stops_after_the_record_in_flight_and_a_rerun_finishes(tmp_path):
    docs = [str(write_invoice_pdf(tmp_path / f"d{i}.pdf")) for i in range(3)]
    seen = []

    def interrupting(pages, questions, keep):  # test double that presses Ctrl-C once
        for rec in stand_in_answer(pages, questions, keep):
            seen.append(rec)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGINT)
            yield rec

    out = tmp_path / "out.jsonl"
    summary = run_batch(tmp_path, QUESTIONS, docs, out, answer=interrupting)
    assert summary.interrupted
    assert len(read_jsonl(out)) == 3  # the record in flight was written, nothing after it
    summary = run_batch(tmp_path, QUESTIONS, docs, out)
    assert not summary.interrupted and summary.skipped == 3
    rows = read_jsonl(out)
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted((d, q.id) for d in docs for q in QUESTIONS)
    assert batch.resume_hint(["batch", "q.txt", "d", "-o", "o.jsonl", "--overwrite"]) == "docq batch q.txt d -o o.jsonl"


def test_failures_are_handled_by_their_kind_never_by_their_text(tmp_path):
    from docvqa_cli.errors import EnvironmentProblem, ErrorKind

    docs = [str(write_invoice_pdf(tmp_path / "d.pdf"))]
    keeps = []

    def recording(pages, questions, keep):  # test double: errors as records, like pipeline.py
        for rec in stand_in_answer(pages, questions, keep):
            keeps.append(keep)
            rec.error, rec.failure = "out of memory, also with fewer tiles", ErrorKind.out_of_memory
            yield rec

    out = tmp_path / "out.jsonl"
    summary = run_batch(tmp_path, QUESTIONS, docs, out, answer=recording)
    # A recorded failure is final: the answer step (pipeline.Answerer) has retried it already.
    assert keeps == [0.5, 0.5] and summary.errors == 2
    assert all("out of memory" in r["error"] and "failure" not in r for r in read_jsonl(out))

    def says_oom_but_is_not(pages, questions, keep):  # the words alone do not make an OOM
        keeps.append(keep)
        raise RuntimeError("CUDA out of memory (a message, not the error type)")
        yield

    keeps.clear()
    run_batch(tmp_path, QUESTIONS, docs, tmp_path / "out2.jsonl", answer=says_oom_but_is_not)
    assert keeps == [0.5, 0.5]  # no retry with fewer tiles

    def host_oom(pages, questions, keep):  # MemoryError is out of memory too: retried
        keeps.append(keep)
        raise MemoryError()
        yield

    keeps.clear()
    run_batch(tmp_path, QUESTIONS[:1], docs, tmp_path / "out3.jsonl", answer=host_oom)
    assert keeps == [0.5, 0.25, 0.125]

    def missing_package(pages, questions, keep):  # an environment problem stops the job
        raise EnvironmentProblem("bitsandbytes missing: pip install bitsandbytes")
        yield

    with pytest.raises(EnvironmentProblem):
        run_batch(tmp_path, QUESTIONS, docs, tmp_path / "out4.jsonl", answer=missing_package)


# --- with a real tiny model through `docq batch` -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("model") / "tiny-idefics3")


def invoke(args, stdin=None):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    return CliRunner().invoke(main, ["batch", *map(str, args)], input=stdin)


# tesseract reads the scans faster here; where it is not installed, RapidOCR (the default) does.
OCR_ARGS = ["--ocr", "tesseract"] if shutil.which("tesseract") else []
MODEL_ARGS = ["--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", *OCR_ARGS]


def test_batch_over_good_and_bad_documents_with_a_tiny_model(tmp_path, tiny_model):
    expected = make_folder(tmp_path / "docs")
    locked = tmp_path / "docs" / "unreadable.pdf"
    locked.write_bytes((tmp_path / "docs" / "invoice.pdf").read_bytes())
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads it anyway: that case cannot be made here
        locked.unlink()
    else:
        expected[str(locked)] = "cannot read"
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\nWhat is the invoice number?\n")
    out = tmp_path / "out.jsonl"
    result = invoke([qfile, tmp_path / "docs", "-o", out, "--model", tiny_model, *MODEL_ARGS])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # records went to -o; the summary is on stderr
    assert "answered" in result.stderr and "errors" in result.stderr
    rows = read_jsonl(out)
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted((d, q) for d in expected for q in ("q1", "q2"))
    for r in rows:
        frag = expected[r["doc"]]
        if frag:
            assert frag in r["error"], r
        else:  # a well-formed record of the real model (its answer text is noise)
            assert r["error"] is None and r["model"] == str(tiny_model)
            assert 0 < r["tiles_kept"] < r["tiles_total"] and 0 <= r["confidence"] <= 1
    # Without errors the exit code is 0: the good documents only, to stdout.
    result = invoke([qfile, tmp_path / "docs" / "invoice.pdf", "--model", tiny_model, *MODEL_ARGS])
    assert result.exit_code == 0, result.output
    assert [json.loads(l)["question_id"] for l in result.stdout.splitlines()] == ["q1", "q2"]


def test_csv_resume_with_a_question_file_that_gained_a_question(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(2):
        write_invoice_pdf(docs / f"d{i}.pdf")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"id": "total", "question": "What is the total amount?"}\n')
    out = tmp_path / "out.csv"
    assert invoke([qfile, docs, "-o", out, "--model", tiny_model, *MODEL_ARGS]).exit_code == 0
    with open(qfile, "a") as fh:
        fh.write('{"id": "number", "question": "What is the invoice number?"}\n')
    result = invoke([qfile, docs, "-o", out, "--model", tiny_model, *MODEL_ARGS])
    assert result.exit_code == 0, result.output
    assert "2 answered" in result.stderr and "2 already done" in result.stderr
    import csv

    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted(
        (str(docs / f"d{i}.pdf"), q) for i in range(2) for q in ("total", "number"))
    assert all(r["error"] == "" and r["model"] == str(tiny_model) for r in rows)


def test_a_file_name_that_is_not_utf8_is_answered_escaped_and_resumed(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_invoice_pdf(docs / "good.pdf")
    os.rename(docs / "good.pdf", os.fsencode(docs) + b"/bad\xff.pdf")
    write_invoice_pdf(docs / "ok.pdf")
    name = str(docs) + "/bad\\xff.pdf"  # the undecodable byte, escaped as \xNN
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    shown = invoke([qfile, docs, "--model", tiny_model, *MODEL_ARGS])  # to stdout: valid UTF-8
    assert shown.exit_code == 0, shown.output
    assert sorted(json.loads(l)["doc"] for l in shown.stdout_bytes.decode("utf-8").splitlines()) == [
        name, str(docs / "ok.pdf")]
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"out.{fmt}"
        assert invoke([qfile, docs, "-o", out, "--model", tiny_model, *MODEL_ARGS]).exit_code == 0
        again = invoke([qfile, docs, "-o", out, "--model", tiny_model, *MODEL_ARGS])
        assert again.exit_code == 0, again.output
        assert "2 already done" in again.stderr
        text = out.read_bytes().decode("utf-8")  # valid UTF-8
        if fmt == "jsonl":
            got = [r["doc"] for r in read_jsonl(out)]
        else:
            got = [r["doc"] for r in csv.DictReader(io.StringIO(text, newline=""))]
        assert sorted(got) == [name, str(docs / "ok.pdf")]  # one record each: no duplicate


def test_retry_errors_answers_a_fixed_document_again_and_its_new_record_counts(tmp_path, tiny_model):
    from click.testing import CliRunner

    from docvqa_cli import export
    from docvqa_cli.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    write_invoice_pdf(docs / "good.pdf")
    fixed = docs / "fixed.pdf"
    fixed.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ncorrupt")  # a broken PDF in run 1
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\nWhat is the invoice number?\n")
    out = tmp_path / "out.jsonl"
    args = [qfile, docs / "good.pdf", fixed, "-o", out, "--model", tiny_model, *MODEL_ARGS]
    first = invoke(args)
    assert first.exit_code == 1, first.output
    assert sorted(r["doc"] for r in read_jsonl(out) if r["error"]) == [str(fixed)] * 2
    write_invoice_pdf(fixed)  # the user replaces it with a good PDF
    plain = invoke(args)  # a resume without the flag leaves error records as they are
    assert plain.exit_code == 1 and "4 already done" in plain.stderr and len(read_jsonl(out)) == 4
    retried = invoke([*args, "--retry-errors"])
    assert retried.exit_code == 0, retried.output
    assert "2 answered, 0 errors, 2 already done, 2 retried" in retried.stderr
    rows = read_jsonl(out)
    assert len(rows) == 6 and [bool(r["error"]) for r in rows[4:]] == [False, False]  # appended after the old ones
    assert {r["doc"] for r in rows[4:]} == {str(fixed)}
    # The resume scanner reads the later record as the one that counts: nothing left to do.
    sink = batch.Output(str(out), formats.get("jsonl"))
    try:
        assert len(sink.done.pairs) == 4 and not any(failed for _, failed in sink.done.pairs.values())
    finally:
        sink.close()
    again = invoke([*args, "--retry-errors"])
    assert again.exit_code == 0 and "0 answered, 0 errors, 4 already done" in again.stderr, again.output
    assert "retried" not in again.stderr and len(read_jsonl(out)) == 6
    # docq export: exactly one record per pair, the good one; the wide table has no error cells.
    kept = export.read_records(str(out))
    assert sorted((r["doc"], r["question_id"]) for r in kept) == sorted(
        (str(d), q) for d in (docs / "good.pdf", fixed) for q in ("q1", "q2"))
    assert all(r["error"] is None for r in kept)
    table = CliRunner().invoke(main, ["export", str(out), "--wide"])
    assert table.exit_code == 0, table.output
    wide_rows = list(csv.DictReader(io.StringIO(table.stdout, newline="")))
    assert sorted(r["doc"] for r in wide_rows) == sorted([str(docs / "good.pdf"), str(fixed)])
    assert all(r["q1_confidence"] != "" and r["q2_confidence"] != "" for r in wide_rows)


def test_retry_errors_needs_an_output_file(tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total?\n")
    write_invoice_pdf(tmp_path / "a.pdf")
    result = invoke([qfile, tmp_path / "a.pdf", "--retry-errors"])
    assert result.exit_code == 2 and "--retry-errors needs -o FILE" in result.output


def test_csv_resume_of_names_and_ids_that_start_with_a_quote_and_a_formula_character(
        tmp_path, tiny_model, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("'=x.pdf", "=y.pdf"):
        write_invoice_pdf(docs / name)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"id": "\'+total", "question": "What is the total amount?"}\n'
                     '{"id": "@n", "question": "What is the invoice number?"}\n')
    monkeypatch.chdir(docs)  # relative names: the doc cell starts with the quote
    out = tmp_path / "out.csv"
    for _ in range(2):
        result = invoke([qfile, "'=x.pdf", "=y.pdf", "-o", out, "--model", tiny_model, *MODEL_ARGS])
        assert result.exit_code == 0, result.output
    assert "4 already done" in result.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["doc"], r["question_id"]) for r in rows) == sorted(
        (d, q) for d in ("''=x.pdf", "'=y.pdf") for q in ("''+total", "'@n"))


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_gives_one_record_per_pair(tmp_path, tiny_model, docq_env, python):
    import subprocess
    import time

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        write_invoice_pdf(docs / f"d{i}.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\nWhat is the invoice number?\nWhat is the date?\n")
    out = tmp_path / "out.jsonl"
    cmd = [python, "-m", "docvqa_cli", "batch", str(qfile), str(docs), "-o", str(out),
           "--model", str(tiny_model), *MODEL_ARGS]

    def records_in(path) -> int:
        return path.read_bytes().count(b"\n") if path.exists() else 0

    # Kill points: as soon as the output file exists (model still loading), after the first
    # record, and two records later (in the middle of a document's questions).
    points = [lambda n0: out.exists(), lambda n0: records_in(out) >= 1, lambda n0: records_in(out) >= n0 + 2]
    for point in points:
        n0 = records_in(out)
        proc = subprocess.Popen(cmd, env=docq_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not point(n0) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert records_in(out) < 15  # it really was stopped before the end
    done = subprocess.run(cmd, env=docq_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    pairs = [(r["doc"], r["question_id"]) for r in rows]
    assert sorted(pairs) == sorted((str(docs / f"d{i}.pdf"), f"q{q}") for i in range(5) for q in (1, 2, 3))
    assert all(list(r) == list(records.KEYS) and r["error"] is None for r in rows)


def test_annotate_writes_one_highlighted_copy_per_good_document(tmp_path, tiny_model):
    import pymupdf

    docs = tmp_path / "docs"
    (docs / "a").mkdir(parents=True)
    (docs / "b").mkdir()
    write_invoice_pdf(docs / "a" / "inv.pdf")
    write_invoice_pdf(docs / "b" / "inv.pdf")  # same name, another folder
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    folder = tmp_path / "annotated"
    result = invoke([qfile, docs, "-o", tmp_path / "out.jsonl", "--annotate", folder, "--model", tiny_model,
                     *MODEL_ARGS])
    assert result.exit_code == 1, result.output  # the broken file is an error record
    made = sorted(p.name for p in folder.iterdir())
    assert len(made) == 2 and len(set(made)) == 2  # no overwrite between a/inv.pdf and b/inv.pdf
    for name in made:
        with pymupdf.open(folder / name) as pdf:
            assert pdf.page_count == 1 and "Total due" in pdf[0].get_text()


def test_questions_of_several_documents_share_a_forward_with_the_same_answers(tmp_path, tiny_model, monkeypatch):
    import functools

    from docvqa_cli import pipeline
    from docvqa_cli.vlm.base import Backend

    docs = []
    for i in range(3):
        docs.append(str(write_invoice_pdf(tmp_path / f"d{i}.pdf")))
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf")
    docs.insert(1, str(tmp_path / "bad.pdf"))
    questions = [batch.Question("q1", "What is the total amount?"), batch.Question("q2", "What is the date?")]
    sizes = []
    real, real_one = Backend.answer_batch, Backend.answer

    def counting(self, items, prompt, max_new_tokens=32):
        sizes.append(len(items))
        return real(self, items, prompt, max_new_tokens)

    def counting_one(self, question, views, prompt, max_new_tokens=32):  # a batch of one skips answer_batch
        sizes.append(1)
        return real_one(self, question, views, prompt, max_new_tokens)

    monkeypatch.setattr(Backend, "answer_batch", counting)
    monkeypatch.setattr(Backend, "answer", counting_one)

    def job(batch_size):
        sizes.clear()
        out = io.StringIO()
        opener = functools.partial(pipeline.open_backend, ModelOptions(str(tiny_model), "cpu", decode="plain"))
        summary = batch.run(questions, docs, load=functools.partial(documents.load, dpi=72),
                            answerer=batch.model_answerer(opener, AnswerOptions(max_new_tokens=3, batch_size=batch_size)),
                            output=batch.StreamOutput(out, formats.get("jsonl")), jobs=0)
        return summary, [json.loads(line) for line in out.getvalue().splitlines()], list(sizes)

    s1, one, sizes1 = job(1)
    s4, four, sizes4 = job(4)
    assert max(sizes1) == 1 and max(sizes4) == 4  # 4 questions of 2 documents in one forward
    assert len(one) == len(four) == 8 and s4.errors == s1.errors == 2  # the bad file: error records
    key = lambda r: (r["doc"], r["question_id"])
    for a, b in zip(sorted(one, key=key), sorted(four, key=key)):
        assert (a["answer"], a["tiles_kept"], a["error"] is None) == (b["answer"], b["tiles_kept"], b["error"] is None)


def test_output_that_is_an_input_is_refused_and_a_document_never_truncated(tmp_path):
    doc = write_invoice_pdf(tmp_path / "v.pdf")
    before = doc.read_bytes()
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    for out, extra in ((doc, []), (doc, ["--overwrite"]), (qfile, ["--overwrite"])):
        result = invoke([qfile, doc, "-o", out, "--model", tmp_path / "nothing", *extra, *MODEL_ARGS])
        assert result.exit_code == 2, result.output
        assert "is an input" in result.stderr
    assert doc.read_bytes() == before and qfile.read_text() == "What is the total amount?\n"
    # A document that is not among DOCS is not taken for a records file either.
    other = write_invoice_pdf(tmp_path / "other.pdf")
    result = invoke([qfile, doc, "-o", other, "--model", tmp_path / "nothing", *MODEL_ARGS])
    assert result.exit_code == 2 and "is a document, not a file of records" in result.stderr


def test_annotated_copies_are_named_after_the_whole_path():
    assert batch.annotated_path("docs/a/inv.pdf", "out") == os.path.join("out", "docs%2Fa%2Finv.pdf")
    assert batch.annotated_path("docs/a/scan.png", "out") == os.path.join("out", "docs%2Fa%2Fscan.png%.pdf")
    assert batch.annotated_path("/abs/x.PDF", "out") == os.path.join("out", "abs%2Fx.PDF")
    assert batch.annotated_path("../up/x.pdf", "out") == os.path.join("out", "%2E%2E%2Fup%2Fx.pdf")
    # One copy per document: names that the old mapping sent to one file stay apart.
    clashing = ["a__b.pdf", "a/b.pdf", "x..y.pdf", "x_y.pdf", "x/../y.pdf", "y.pdf", "scan.png", "scan.png.pdf",
                "a%2Fb.pdf", "p%.pdf", "p"]
    assert len({batch.annotated_path(d, "out") for d in clashing}) == len(set(os.path.normpath(d) for d in clashing))
