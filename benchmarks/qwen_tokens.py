"""Image tokens and images a Qwen backend encodes for one A4 page, at keep 1.0 and 0.5.

A tiny random-weight model of each family with the real image-processor limits (no pixel cap
below docq's own budget), so the counts are the ones the real model would get; the time is
preprocess + a 1-token generate of the tiny model on this machine (not the real model's).
Run: python benchmarks/qwen_tokens.py  (from the repository root)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _tiny_qwen import build_tiny_qwen  # noqa: E402
from conftest import write_invoice_pdf  # noqa: E402

from docvqa_cli import relevance  # noqa: E402
from docvqa_cli.reading import documents, tiles  # noqa: E402
from docvqa_cli.vlm.base import PageView  # noqa: E402
from docvqa_cli.vlm.load import load_backend  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    page = documents.load(str(write_invoice_pdf(tmp / "a4.pdf")), dpi=150)[0]
    print(f"A4 page at 150 dpi: {page.image.width} x {page.image.height} px")
    for model_type in ("qwen2_5_vl", "qwen3_vl"):
        folder = build_tiny_qwen(tmp / model_type, model_type, max_tokens_per_image=16384)
        backend = load_backend(str(folder), device="cpu", quant="none", say=lambda line: None)
        all_tiles = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
        overview = tiles.overview(page, max_px=backend.tile_px)
        for keep in (1.0, 0.5):
            kept = [s.tile for s in relevance.select(relevance.score("What is the total?", all_tiles), keep)]
            start = time.perf_counter()
            gen = backend.answer("What is the total?", [PageView(page, overview, kept)], "{question}", 1)
            seconds = time.perf_counter() - start
            print(f"{model_type}: tile_px {backend.tile_px}, keep {keep}: {gen.images_encoded} images "
                  f"({len(kept)} of {len(all_tiles)} tiles + overview), {gen.image_tokens} image tokens, "
                  f"{seconds:.2f} s tiny-model answer")


if __name__ == "__main__":
    main()
