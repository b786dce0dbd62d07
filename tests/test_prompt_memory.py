"""The memory budget of one question (relevance/prompt_cap.py): a 2,000-page PDF and a 500-frame TIFF
are answered by a real tiny model through ``docq batch`` within a fixed bound on peak memory,
measured on the docq process itself. (How peak memory stays flat as pages grow is a
benchmark: benchmarks/memory_pages.py, numbers in benchmarks/RESULTS.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from docvqa_cli import relevance
from docvqa_cli.reading import tiles
from docvqa_cli.reading.documents import load
from docvqa_cli.relevance import prompt_cap
from make_hostile import many_frames_tiff, many_pages_pdf

PEAK_BOUND_MB = 1500  # the bar is 2 GB; docq with torch and a tiny model starts near 500 MB

# Runs a command and prints its peak resident memory in KB (Linux ru_maxrss of the child).
_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")


def test_the_cap_keeps_the_best_pages_within_the_image_budget(tmp_path):
    pdf = many_pages_pdf(tmp_path / "long.pdf", pages=60, special=47)
    pages = load(str(pdf), ocr=None)
    grid = [t for p in pages for t in tiles.split(p, tile_px=64, max_tiles=4)]
    scores = relevance.score("What is the total due?", grid)
    selected = relevance.select(scores, 0.5)
    assert prompt_cap.images(selected) > 24  # the selection alone would overflow the prompt
    capped = prompt_cap.cap(selected, max_images=24)
    assert prompt_cap.images(capped) <= 24
    assert 47 in {s.tile.page_number for s in capped}  # the page with the total is shown
    assert [s.tile.key for s in capped] == sorted(s.tile.key for s in capped)
    assert sum(s.kept for s in scores) == len(capped)  # the dropped tiles are no longer kept
    assert not any(p.rendered for p in pages)  # nothing rendered for scoring and capping
    # A selection within the cap is left as it is.
    few = relevance.select(relevance.score("What is the total due?", grid[:8]), 0.5)
    assert prompt_cap.cap(list(few), max_images=24) == few


# The TIFF's frames have no text layer; OCR of 500 frames takes far longer than this test may
# (about 2 s a frame here), and OCR is not what holds memory: the frames read with ocr=None
# through the same documents.load and pipeline the commands use, with the real model.
_TIFF_RUN = """
import sys
from docvqa_cli import pipeline
from docvqa_cli.options import ModelOptions
from docvqa_cli.reading import documents
pages = documents.load(sys.argv[1], ocr=None)
backend, visual = pipeline.open_backend(ModelOptions(model=sys.argv[2], device="cpu"))
for record in pipeline.answer_questions(pages, [("q1", "What is the total due?")], backend, max_new_tokens=2):
    print(record.tiles_kept, record.tiles_total, record.error)
"""


def peak_of(cmd, env) -> tuple[int, subprocess.CompletedProcess]:
    """Peak resident memory (MB) of ``cmd`` and its result."""
    done = subprocess.run([sys.executable, "-c", _PEAK, *cmd], env=env, capture_output=True, text=True, timeout=900)
    *lines, last = done.stdout.strip().splitlines()
    peak_kb, rc = map(int, last.split())
    done.stdout = "\n".join(lines)
    done.returncode = rc
    return peak_kb // 1024, done


@pytest.mark.slow
def test_a_2000_page_pdf_and_a_500_frame_tiff_within_a_fixed_memory_bound(tmp_path, docq_env, python):
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny-idefics3")
    docs = tmp_path / "docs"
    docs.mkdir()
    many_pages_pdf(docs / "long.pdf", pages=2000)
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total due?\n")
    out = tmp_path / "out.jsonl"
    # --dpi 50: two tiles a page, so scoring 2,000 pages stays quick; memory is the question here.
    cmd = [python, "-m", "docvqa_cli", "batch", str(qfile), str(docs), "-o", str(out), "--model", str(model),
           "--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--dpi", "50"]
    peak, done = peak_of(cmd, docq_env)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["error"] is None
    assert row["tiles_kept"] < prompt_cap.DEFAULT_MAX_IMAGES < row["tiles_total"]
    assert peak < PEAK_BOUND_MB, f"2,000-page PDF: peak {peak} MB"

    tiff = many_frames_tiff(tmp_path / "frames.tif", frames=500)
    peak, done = peak_of([python, "-c", _TIFF_RUN, str(tiff), str(model)], docq_env)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, total, error = done.stdout.split()
    assert error == "None" and int(kept) < prompt_cap.DEFAULT_MAX_IMAGES < int(total)
    assert peak < PEAK_BOUND_MB, f"500-frame TIFF: peak {peak} MB"
