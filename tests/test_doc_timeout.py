"""--doc-timeout: a real hostile PDF (nested form XObjects, tests/make_hostile.py) that hangs
MuPDF becomes one error record in its time limit, the documents around it are answered, and
Ctrl-C ends a run stuck on it at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import write_invoice_pdf
from docvqa_cli.errors import InputError
from docvqa_cli.reading.reader import TimedLoader
from make_hostile import nested_forms_pdf


def test_the_hostile_pdf_hangs_mupdf_and_the_loader_gives_it_up_in_its_limit(tmp_path):
    hostile = nested_forms_pdf(tmp_path / "nested.pdf")
    good = write_invoice_pdf(tmp_path / "good.pdf")
    with TimedLoader(timeout=3, ocr=None) as load:
        start = time.monotonic()
        with pytest.raises(InputError, match="--doc-timeout"):
            load(str(hostile))
        assert time.monotonic() - start < 30
        pages = load(str(good))  # a fresh worker reads the next document
        assert "1,157.40" in " ".join(w.text for w in pages[0].words)
        with pytest.raises(InputError, match="no such file"):  # errors of the document itself come back
            load(str(tmp_path / "missing.pdf"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("model") / "tiny-idefics3")


def batch_cmd(python, qfile, docs, out, model, *extra):
    return [python, "-m", "docvqa_cli", "batch", str(qfile), str(docs), "-o", str(out), "--model", str(model),
            "--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--ocr", "tesseract", *extra]


def test_a_hung_document_ends_in_its_limit_and_the_others_are_answered(tmp_path, tiny_model, docq_env, python):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_invoice_pdf(docs / "a_before.pdf")
    nested_forms_pdf(docs / "b_hostile.pdf")
    write_invoice_pdf(docs / "c_after.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(batch_cmd(python, qfile, docs, out, tiny_model, "--doc-timeout", "5"), env=docq_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]  # a record carries an error
    rows = {os.path.basename(r["doc"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["a_before.pdf", "b_hostile.pdf", "c_after.pdf"]
    assert rows["a_before.pdf"]["error"] is None and rows["c_after.pdf"]["error"] is None
    assert "--doc-timeout" in rows["b_hostile.pdf"]["error"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _cmdline(pid: int) -> str:
    """The command line of ``pid``, or "" once it has gone (children come and go while we look)."""
    try:
        with open(f"/proc/{pid}/cmdline") as fh:
            return fh.read()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc")
def test_ctrl_c_ends_a_run_stuck_on_a_hung_document(tmp_path, tiny_model, docq_env, python):
    docs = tmp_path / "docs"
    docs.mkdir()
    nested_forms_pdf(docs / "hostile.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(batch_cmd(python, qfile, docs, out, tiny_model, "--doc-timeout", "600"), env=docq_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        readers = []
        while time.monotonic() < deadline and not readers:  # the reading child is at work
            readers = [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]
            time.sleep(0.2)
        assert readers, "no reading process started"
        time.sleep(3)  # inside MuPDF by now
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)  # not the 600 s of the limit
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, proc.stderr.read()[-2000:]
    time.sleep(1)
    assert not any(_alive(c) for c in readers)  # the hung child went with it
