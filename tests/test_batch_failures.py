"""docq batch when the file system fights back: unreadable folders, files that are not
documents, symbolic-link loops, an output that is a pipe or a device, and an output whose
writes fail in the middle of the job (real files, real links, a real file-size limit)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import write_invoice_pdf
from docvqa_cli import batch
from docvqa_cli.errors import ExitCode
from test_batch import MODEL_ARGS, invoke, read_jsonl, tiny_model  # noqa: F401 (a fixture)


def _lock_folder(folder: Path) -> bool:
    """chmod 000 ``folder``; True when that really stops this process reading it (not as root)."""
    folder.chmod(0)
    try:
        os.listdir(folder)
    except PermissionError:
        return True
    folder.chmod(0o755)
    return False


def _docs_with_a_locked_folder(tmp_path):
    """docs/a.pdf and an unreadable docs/locked/b.pdf (skips where permissions are not enforced)."""
    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    write_invoice_pdf(docs / "a.pdf")
    write_invoice_pdf(docs / "locked" / "b.pdf")
    if not _lock_folder(docs / "locked"):
        pytest.skip("permissions are not enforced for this user (root): an unreadable folder cannot be made")
    return docs


def test_unreadable_folder_is_said_and_counted_not_skipped(tmp_path):
    docs = _docs_with_a_locked_folder(tmp_path)
    try:
        said, problems = [], []
        found = batch.find_documents([str(docs)], warn=said.append, problems=problems)
    finally:
        (docs / "locked").chmod(0o755)
    assert found == [str(docs / "a.pdf")]
    assert problems == [str(docs / "locked")]
    assert any(str(docs / "locked") in s and "cannot read this folder" in s for s in said), said


def test_non_documents_get_one_summary_line_and_link_loops_become_error_records(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    write_invoice_pdf(docs / "a.pdf")
    (docs / "page.html").write_text("<html><body>not a document</body></html>\n")
    (docs / "sub" / "photo.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 ")
    os.symlink("loop.pdf", docs / "loop.pdf")  # a link to itself
    os.symlink(docs / "sub" / "ring_b", docs / "sub" / "ring_a")  # two links to each other
    os.symlink(docs / "sub" / "ring_a", docs / "sub" / "ring_b")
    said = []
    found = batch.find_documents([str(docs)], warn=said.append)
    assert found == [str(docs / "a.pdf"), str(docs / "loop.pdf"), str(docs / "sub" / "ring_a"),
                     str(docs / "sub" / "ring_b")]
    assert len(said) == 1 and said[0].startswith("2 file(s)") and "not documents" in said[0], said
    assert str(docs / "page.html") in said[0]
    from docvqa_cli.errors import InputError
    from docvqa_cli.reading import documents

    for link in ("loop.pdf", "sub/ring_a"):
        with pytest.raises(InputError, match="symbolic-link loop"):
            documents.read_bytes(str(docs / link))
    os.symlink(docs / "gone.pdf", docs / "dangling.pdf")
    with pytest.raises(InputError, match="symbolic link to a missing file"):
        documents.read_bytes(str(docs / "dangling.pdf"))


def test_batch_says_what_it_left_out_and_exits_1(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    write_invoice_pdf(docs / "a.pdf")
    write_invoice_pdf(docs / "locked" / "b.pdf")
    (docs / "page.html").write_text("<html></html>\n")
    os.symlink("loop.pdf", docs / "loop.pdf")
    locked = _lock_folder(docs / "locked")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    out = tmp_path / "out.jsonl"
    try:
        result = invoke([qfile, docs, "-o", out, "--model", tiny_model, *MODEL_ARGS])
    finally:
        (docs / "locked").chmod(0o755)
    assert result.exit_code == ExitCode.partial, result.output
    assert "1 file(s) in the folders and globs given are not documents" in result.stderr
    rows = {r["doc"]: r for r in read_jsonl(out)}
    assert rows[str(docs / "a.pdf")]["error"] is None
    assert "symbolic-link loop" in rows[str(docs / "loop.pdf")]["error"]
    assert "no such file" not in rows[str(docs / "loop.pdf")]["error"]
    if locked:
        assert f"{docs / 'locked'}: cannot read this folder" in result.stderr
        assert "1 folder(s) could not be read" in result.stderr
        assert str(docs / "locked" / "b.pdf") not in rows


def test_unreadable_folder_alone_makes_the_exit_code_1(tmp_path, tiny_model):
    docs = _docs_with_a_locked_folder(tmp_path)
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    try:
        result = invoke([qfile, docs, "--model", tiny_model, *MODEL_ARGS])
    finally:
        (docs / "locked").chmod(0o755)
    assert result.exit_code == ExitCode.partial, result.output
    assert [json.loads(l)["error"] for l in result.stdout.splitlines()] == [None]  # every record is good


# --- the output ---------------------------------------------------------------------------------

def test_output_that_is_a_fifo_is_refused_before_any_work(tmp_path, tiny_model):
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    write_invoice_pdf(tmp_path / "a.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    result = invoke([qfile, tmp_path / "a.pdf", "-o", fifo, "--model", tiny_model, *MODEL_ARGS])
    assert result.exit_code == ExitCode.usage, result.output
    assert f"-o {fifo}: is not a regular file" in result.stderr
    assert "Illegal seek" not in result.output and "internal error" not in result.output


def test_output_dev_stdout_on_a_pipe_is_refused_with_a_usage_message(tmp_path, tiny_model, docq_env, python):
    write_invoice_pdf(tmp_path / "a.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    done = subprocess.run([python, "-m", "docvqa_cli", "batch", str(qfile), str(tmp_path / "a.pdf"),
                           "-o", "/dev/stdout", "--model", str(tiny_model), *MODEL_ARGS],
                          env=docq_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.usage, done.stderr
    assert "-o /dev/stdout: is not a regular file" in done.stderr and "leave -o out" in done.stderr
    assert "Illegal seek" not in done.stderr and done.stdout == ""


def test_a_write_that_fails_mid_job_says_so_exits_4_and_the_rerun_resumes(tmp_path, tiny_model, docq_env, python):
    write_invoice_pdf(tmp_path / "a.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    out = tmp_path / "out.jsonl"
    cmd = [python, "-m", "docvqa_cli", "batch", str(qfile), str(tmp_path / "a.pdf"), "-o", str(out),
           "--model", str(tiny_model), *MODEL_ARGS]
    first = subprocess.run(cmd, env=docq_env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    kept = out.read_bytes()
    with open(qfile, "a") as fh:
        fh.write("What is the invoice number?\n")
    limit = len(kept) + 1  # the next record gets one byte in, then the file may grow no more

    def file_size_limit():  # in the child: writes past `limit` fail with EFBIG (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    failed = subprocess.run(cmd, env=docq_env, capture_output=True, text=True, timeout=300,
                            preexec_fn=file_size_limit)
    assert failed.returncode == ExitCode.incomplete == 4, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if "cannot write" in line]
    assert len(lines) == 1, failed.stderr
    assert f"-o {out}: cannot write (File too large)" in lines[0]
    assert "the records already in it are safe" in lines[0] and "run the same command again to resume" in lines[0]
    assert "internal error" not in failed.stderr and "Traceback" not in failed.stderr
    assert out.read_bytes().startswith(kept)  # nothing already written was lost
    done = subprocess.run(cmd, env=docq_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert [(r["question_id"], r["error"]) for r in rows] == [("q1", None), ("q2", None)]


def test_stdout_on_a_full_device_says_so_and_exits_4(tmp_path, tiny_model, docq_env, python):
    write_invoice_pdf(tmp_path / "a.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    with open("/dev/full", "w") as full:  # a real device whose every write fails with ENOSPC
        done = subprocess.run([python, "-m", "docvqa_cli", "batch", str(qfile), str(tmp_path / "a.pdf"),
                               "--model", str(tiny_model), *MODEL_ARGS],
                              env=docq_env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == ExitCode.incomplete, done.stderr
    assert "stdout: cannot write (No space left on device)" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
