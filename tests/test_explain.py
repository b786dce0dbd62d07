"""`docq explain` end to end: a real PDF, the JSON contract, the table, the heat pictures."""

from __future__ import annotations

import json
import subprocess

import pymupdf
import pytest
from PIL import Image

from conftest import DEV_DATA, write_invoice_pdf


def run(python, env, *args):
    return subprocess.run([python, "-m", "docvqa_cli", "explain", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def words_box(pdf, text):
    """The box (points) of ``text`` on page 1, from PyMuPDF's own search."""
    with pymupdf.open(pdf) as doc:
        r = doc[0].search_for(text)[0]
    return (r.x0, r.y0, r.x1, r.y1)


def inside(box, tile_box):
    return all(a >= b - 0.5 for a, b in zip(box[:2], tile_box[:2])) and all(
        a <= b + 0.5 for a, b in zip(box[2:], tile_box[2:]))


def test_explain_keeps_the_tile_with_the_answer_and_draws_it(invoice_pdf, tmp_path, python, docq_env):
    heat = tmp_path / "heat.png"
    r = run(python, docq_env, invoice_pdf, "What is the total amount?", "--format", "json", "-o", heat)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout is one JSON object and nothing else
    assert list(out) == ["doc", "question", "keep", "pages"]
    assert out["doc"] == str(invoice_pdf) and out["keep"] == 0.5
    page = out["pages"][0]
    assert list(page) == ["page", "width", "height", "tiles"] and page["page"] == 1
    assert list(page["tiles"][0]) == ["id", "box", "score", "kept", "parts", "words"]
    tiles = page["tiles"]
    assert sum(t["kept"] for t in tiles) == -(-len(tiles) // 2)  # ceil(0.5 x tiles)
    answer = words_box(invoice_pdf, "1,157.40")
    holders = [t for t in tiles if inside(answer, t["box"])]
    assert holders and any(t["kept"] for t in holders)
    best = max(tiles, key=lambda t: t["score"])  # the best tile holds part of the total's line
    assert best["kept"] and best["box"][1] <= answer[1] and best["box"][3] >= answer[3]
    assert best["box"][0] < answer[2] and best["box"][2] > answer[0]
    # The words that earned the best tile its score, as the table shows them, with their boxes.
    texts = [w["text"] for w in best["words"]]
    assert "Total" in texts
    for w in best["words"]:  # each on the tile (a word may run over its edge)
        x0, y0, x1, y1 = w["box"]
        assert list(w) == ["text", "box"] and x0 < best["box"][2] and x1 > best["box"][0]
        assert y0 < best["box"][3] and y1 > best["box"][1]
    assert "wrote" in r.stderr and heat.exists()
    with Image.open(heat) as img:
        assert img.format == "PNG"
        assert abs(img.width / img.height - page["width"] / page["height"]) < 0.01


def test_explain_table_for_people(invoice_pdf, python, docq_env):
    r = run(python, docq_env, invoice_pdf, "What is the invoice number?", "--keep", "0.25")
    assert r.returncode == 0, r.stderr
    assert "kept" in r.stdout and "dropped" in r.stdout and "lexical" in r.stdout
    assert "keeping 3 of 12 tiles" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour when not a terminal


def test_explain_multi_page_folder_output(tmp_path, python, docq_env):
    pdf = write_invoice_pdf(tmp_path / "three.pdf", pages=3)
    folder = tmp_path / "heat"
    r = run(python, docq_env, pdf, "What is the date?", "--format", "json", "-o", str(folder) + "/")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["three-p1.png", "three-p2.png", "three-p3.png"]
    pages = json.loads(r.stdout)["pages"]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert sum(t["kept"] for p in pages for t in p["tiles"]) == 18  # half of 36, over the document


@pytest.mark.parametrize("keep", ["0", "1.5", "-0.2"])
def test_explain_keep_out_of_range_is_a_usage_error(invoice_pdf, python, docq_env, keep):
    r = run(python, docq_env, invoice_pdf, "What is the total?", "--keep", keep)
    assert r.returncode == 2 and r.stdout == ""
    # Click's usage error, as for `ask` and `batch`: the error line names the flag and the range.
    assert "Invalid value for '--keep'" in r.stderr.strip().splitlines()[-1] and "0<x<=1" in r.stderr


def test_explain_bad_output_and_missing_file(invoice_pdf, tmp_path, python, docq_env):
    r = run(python, docq_env, invoice_pdf, "What is the total?", "-o", tmp_path / "heat.jpg")
    assert r.returncode == 2 and "-o" in r.stderr
    r = run(python, docq_env, tmp_path / "nope.pdf", "What is the total?")
    assert r.returncode == 1 and "nope.pdf" in r.stderr and "no such file" in r.stderr


@pytest.mark.skipif(not (DEV_DATA / "invoices" / "oyo.pdf").exists(), reason="dev data not present")
def test_explain_on_a_real_invoice_keeps_the_total(python, docq_env):
    pdf = DEV_DATA / "invoices" / "oyo.pdf"
    r = run(python, docq_env, pdf, "What is the total amount?", "--format", "json", "--keep", "0.25")
    assert r.returncode == 0, r.stderr
    tiles = json.loads(r.stdout)["pages"][0]["tiles"]
    with pymupdf.open(pdf) as doc:
        label = doc[0].search_for("Grand Total")[0]
    # The amount printed on the "Grand Total" line, right of the label.
    words = [w for w in pymupdf.open(pdf)[0].get_text("words") if w[4] == "1939"]
    value = min(words, key=lambda w: abs((w[1] + w[3]) / 2 - (label.y0 + label.y1) / 2))
    box = value[:4]
    assert any(t["kept"] and inside(box, t["box"]) for t in tiles)


def test_explain_with_a_model_adds_its_visual_score(invoice_pdf, tmp_path, python, docq_env):
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny")
    r = run(python, docq_env, invoice_pdf, "What is the total amount?", "--format", "json", "--model", model,
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)["pages"][0]
    assert all(0 <= t["parts"]["visual"] <= 1 for t in page["tiles"])
    assert len({t["parts"]["visual"] for t in page["tiles"]}) > 1  # a score per tile, not one constant
    plain = json.loads(run(python, docq_env, invoice_pdf, "What is the total amount?", "--format", "json").stdout)
    assert all("visual" not in t["parts"] for t in plain["pages"][0]["tiles"])
