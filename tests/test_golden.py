"""Golden records: `docq batch` and `docq ask` over `sample_docs/` with a tiny model, byte for byte.

A refactor must not change a single byte of what users get. These tests run the real
commands (a tiny random-weight Idefics3 built from a config with a fixed seed, the real
PDFs and OCR) and compare the records with the files in ``tests/golden/``, after two
normalisations only: ``seconds`` (wall time) becomes 0 and ``model`` (the tiny model's
temporary folder) becomes ``<tiny-model>``. The answers are the tiny model's noise, but the
same noise every run: prompts, tile selection, decoding, grounding and serialisation all
show up in them.

A change that is meant to alter records regenerates the files and shows the diff in review:

    DOCQ_REGEN_GOLDEN=1 OMP_NUM_THREADS=1 python -m pytest -q tests/test_golden.py

(see ``tests/golden/README.md``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from conftest import ROOT

GOLDEN = Path(__file__).resolve().parent / "golden"
REGEN = os.environ.get("DOCQ_REGEN_GOLDEN") == "1"
QUESTIONS = ["What is the total amount?", "What is the date?", "Who is the seller?"]
DOCS = ["sample_docs/invoice.pdf", "sample_docs/receipt.png", "sample_docs/contract.pdf"]
MODEL_ARGS = ["--device", "cpu", "--max-new-tokens", "4", "--ocr", "tesseract"]
TINY = "<tiny-model>"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("golden") / "tiny-idefics3", seed=0)


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root so records name the documents as `sample_docs/...`."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")


def docq(*args):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def normalise_jsonl(data: bytes, model: str) -> bytes:
    out = []
    for line in data.decode("utf-8").splitlines(keepends=True):
        rec = json.loads(line)
        assert "seconds" in rec and rec["model"] in (model, None), rec
        rec["seconds"] = 0
        rec["model"] = TINY if rec["model"] else None
        out.append(json.dumps(rec, ensure_ascii=False) + "\n")
    return "".join(out).encode("utf-8")


def normalise_csv(data: bytes, model: str) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    header = rows[0]
    sec, mod = header.index("seconds"), header.index("model")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in rows[1:]:
        assert row[mod] in (model, ""), row
        row[sec] = "0"
        row[mod] = TINY if row[mod] else ""
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def check(name: str, data: bytes, model: Path) -> None:
    norm = (normalise_csv if name.endswith(".csv") else normalise_jsonl)(data, str(model))
    path = GOLDEN / name
    if REGEN:
        path.write_bytes(norm)
        return
    assert path.exists(), f"{path} missing: DOCQ_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py"
    expected = path.read_bytes()
    if norm != expected:  # line by line, so a failure shows the first record that moved
        for got, want in zip(norm.splitlines(), expected.splitlines()):
            assert got == want
    assert norm == expected


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_batch_records_are_byte_identical_to_the_golden_file(fmt, tiny_model, in_repo, tmp_path):
    qfile = tmp_path / "questions.txt"
    qfile.write_text("".join(q + "\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / f"out.{fmt}"
    result = docq("batch", qfile, *DOCS, "-o", out, "--jobs", "0", "-q", "--model", tiny_model, *MODEL_ARGS)
    assert result.exit_code in (0, 1), result.output
    assert result.stdout == ""
    check(f"batch.{fmt}", out.read_bytes(), tiny_model)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ask_records_are_byte_identical_to_the_golden_file(fmt, tiny_model, in_repo):
    got = b""
    for doc in DOCS[:2]:
        result = docq("ask", doc, *QUESTIONS, "--format", fmt, "--model", tiny_model, *MODEL_ARGS)
        assert result.exit_code in (0, 1), result.output
        got += result.stdout_bytes if fmt == "jsonl" or not got else result.stdout_bytes.split(b"\r\n", 1)[1]
    check(f"ask.{fmt}", got, tiny_model)
