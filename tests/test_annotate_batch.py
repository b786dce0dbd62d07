"""docq batch --annotate on hostile layouts: checked before the model loads, one copy per
document whatever the names, the folder not swept into the next run, and a non-zero exit
when no copy could be written."""

from __future__ import annotations

import pytest

from conftest import write_invoice_pdf
from docvqa_cli import batch


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("model") / "tiny-idefics3")


def invoke(args):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    return CliRunner().invoke(main, ["batch", *map(str, args)])


MODEL_ARGS = ["--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--ocr", "tesseract"]


def test_an_annotate_path_that_is_a_file_is_refused_before_the_model(tmp_path):
    doc = write_invoice_pdf(tmp_path / "inv.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    (tmp_path / "taken").write_text("a file")
    result = invoke([qfile, doc, "--annotate", tmp_path / "taken", "--model", tmp_path / "no-model", *MODEL_ARGS])
    assert result.exit_code == 2 and "--annotate" in result.stderr and "is a file" in result.stderr


def test_clashing_names_get_their_own_copies_and_the_folder_is_not_a_document(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    (docs / "a").mkdir(parents=True)
    for name in ("a__b.pdf", "a/b.pdf", "x..y.pdf", "x_y.pdf"):
        write_invoice_pdf(docs / name)
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    folder = docs / "annotated"  # inside DOCS
    out = tmp_path / "out.jsonl"
    args = [qfile, docs, "-o", out, "--annotate", folder, "--model", tiny_model, *MODEL_ARGS]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert len(list(folder.iterdir())) == 4  # no copy overwrote another
    rerun = invoke([qfile, docs, "-o", out, "--annotate", folder, "--model", tiny_model, *MODEL_ARGS])
    assert rerun.exit_code == 0, rerun.output
    assert "4 file(s) in it left out" in rerun.stderr and "already done" in rerun.stderr
    assert len(out.read_text().splitlines()) == 4  # the copies were not answered as documents


def test_exit_1_when_no_copy_can_be_written(tmp_path, tiny_model):
    doc = write_invoice_pdf(tmp_path / "inv.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    folder = tmp_path / "annotated"
    blocker = batch.annotated_path(str(doc), str(folder))
    (tmp_path / "annotated").mkdir()
    import os

    os.mkdir(blocker)  # a folder, not empty, where the copy should go: it cannot be saved
    with open(os.path.join(blocker, "keep.txt"), "w") as fh:
        fh.write("someone's file")
    result = invoke([qfile, doc, "-o", tmp_path / "out.jsonl", "--annotate", folder, "--model", tiny_model,
                     *MODEL_ARGS])
    assert result.exit_code == 1, result.output
    assert "no annotated copy" in result.stderr and "1 annotated copies not written" in result.stderr
    assert os.listdir(blocker) == ["keep.txt"]  # nothing of the user's lost
