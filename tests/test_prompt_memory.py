"""The memory budget of one question (prompt_cap.py): a 2,000-page PDF and a 500-frame TIFF
are answered by a real tiny model through ``docq batch`` within a fixed bound on peak memory,
measured on the docq process itself. (How peak memory stays flat as pages grow is a
benchmark: benchmarks/memory_pages.py, numbers in benchmarks/RESULTS.md.)"""

from __future__ import annotations

import json
import subprocess

import pytest

from docvqa_cli import prompt_cap, relevance, tiles
from docvqa_cli.documents import load
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


@pytest.mark.slow
def test_a_2000_page_pdf_and_a_500_frame_tiff_within_a_fixed_memory_bound(tmp_path, docq_env, python):
    from _tiny_models import build_idefics3

    model = build_idefics3(tmp_path / "tiny-idefics3")
    docs = tmp_path / "docs"
    docs.mkdir()
    many_pages_pdf(docs / "long.pdf", pages=2000)
    many_frames_tiff(docs / "frames.tif", frames=500)
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total due?\n")
    out = tmp_path / "out.jsonl"
    cmd = [python, "-m", "docvqa_cli", "batch", str(qfile), str(docs), "-o", str(out), "--model", str(model),
           "--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--ocr", "tesseract"]
    done = subprocess.run([python, "-c", _PEAK, *cmd], env=docq_env, capture_output=True, text=True, timeout=900)
    peak_kb, rc = map(int, done.stdout.split())
    assert rc == 0, done.stderr[-2000:]
    rows = {json.loads(line)["doc"]: json.loads(line) for line in out.read_text().splitlines()}
    assert set(rows) == {str(docs / "long.pdf"), str(docs / "frames.tif")}
    for row in rows.values():
        assert row["error"] is None
        assert row["tiles_kept"] < prompt_cap.DEFAULT_MAX_IMAGES < row["tiles_total"]
    assert peak_kb / 1024 < PEAK_BOUND_MB, f"peak {peak_kb / 1024:.0f} MB"
