"""--max-images: the cap on images in one question's prompt (relevance/prompt_cap.py), given on
the command line, reaches the tile selection of `docq explain` and the prompt of `docq ask` and
`docq batch` (a real multi-page PDF, the tiny random Idefics3 for the model); below 2 it is
refused in one line before any work."""

from __future__ import annotations

import json
import subprocess

import pymupdf
import pytest

from conftest import INVOICE_LINES

QUESTION = "What is the total amount?"
TOTAL_PAGE = 5


def six_pages(path):
    """Six A4 pages of delivery notes; only page 5 holds the invoice with its total."""
    doc = pymupdf.open()
    for n in range(1, 7):
        page = doc.new_page(width=595, height=842)
        if n == TOTAL_PAGE:
            lines = INVOICE_LINES
        else:
            lines = [((72, 72), f"Delivery note DN-{n:03d}", 18), ((72, 110), "Harbour Road depot, Leeds", 10),
                     ((72, 400), f"Parcels handed over: {n + 2}", 11), ((72, 700), "Signed for by the driver", 10)]
        for (x, y), text, size in lines:
            page.insert_text((x, y), text, fontsize=size, fontname="helv")
    doc.save(path)
    doc.close()
    return path


def docq(python, env, *args):
    return subprocess.run([python, "-m", "docvqa_cli", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def kept_tiles(explained: dict) -> set[tuple[int, int]]:
    return {(p["page"], t["id"]) for p in explained["pages"] for t in p["tiles"] if t["kept"]}


def test_a_small_max_images_keeps_the_best_page_tiles_only(tmp_path, python, docq_env):
    pdf = six_pages(tmp_path / "notes.pdf")
    explain = ("explain", pdf, QUESTION, "--format", "json", "--dpi", "72")
    r = docq(python, docq_env, *explain)
    assert r.returncode == 0, r.stderr
    default = kept_tiles(json.loads(r.stdout))
    assert len({page for page, _ in default}) > 1  # at keep 0.5 the selection spans several pages
    r = docq(python, docq_env, *explain, "--max-images", "3")
    assert r.returncode == 0, r.stderr
    capped = kept_tiles(json.loads(r.stdout))
    # 3 images: one page's overview and its best two tiles, on the page that holds the total.
    assert {page for page, _ in capped} == {TOTAL_PAGE} and len(capped) == 2
    assert capped < default


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("max-images") / "tiny-idefics3")


def test_ask_and_batch_carry_max_images_to_the_prompt(tmp_path, python, docq_env, tiny_model):
    pdf = six_pages(tmp_path / "notes.pdf")
    model = ("--model", tiny_model, "--device", "cpu", "--max-new-tokens", "2", "--dpi", "72")
    r = docq(python, docq_env, "ask", pdf, QUESTION, *model, "--max-images", "4")
    assert r.returncode == 0, r.stderr
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["error"] is None and 1 <= rec["tiles_kept"] <= 2 < rec["tiles_total"]  # 2 pages x (overview + tile)

    qfile = tmp_path / "q.txt"
    qfile.write_text(QUESTION + "\n")
    capped, default = tmp_path / "capped.jsonl", tmp_path / "default.jsonl"
    r = docq(python, docq_env, "batch", qfile, pdf, "-o", capped, *model, "--max-images", "4", "-q")
    assert r.returncode == 0, r.stderr
    r = docq(python, docq_env, "batch", qfile, pdf, "-o", default, *model, "-q")
    assert r.returncode == 0, r.stderr
    (small,), (large,) = ([json.loads(line) for line in p.read_text().splitlines()] for p in (capped, default))
    assert small["tiles_kept"] <= 2 < large["tiles_kept"]  # the default cap (48) leaves this document whole
    assert small["tiles_total"] == large["tiles_total"]


@pytest.mark.parametrize("command", ["ask", "batch", "explain"])
def test_max_images_below_two_is_refused_in_one_line(tmp_path, python, docq_env, command):
    pdf = six_pages(tmp_path / "notes.pdf")
    qfile = tmp_path / "q.txt"
    qfile.write_text(QUESTION + "\n")
    args = {"ask": (pdf, QUESTION), "batch": (qfile, pdf), "explain": (pdf, QUESTION)}[command]
    r = docq(python, docq_env, command, *args, "--max-images", "1")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert "--max-images" in line and "at least 2" in line
