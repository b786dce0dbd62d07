"""Idefics3 (SmolVLM) preprocessing per question, before and after issue 13's fix, on the CPU.

One question's images as docq builds them: the kept tiles of a real page (``sample_docs/
invoice.pdf`` at docq's default DPI, cut at the model's native tile size) plus the page's
overview, through the real image processor of the model (built from its ``preprocessor_config``
numbers). "before": the processor's default ``size`` (4x the tile: every image is first
scaled up to 1536 / 2048 px, then down to the tile); "after": ``size={"longest_edge":
tile_px}`` as ``vlm/idefics3.py`` now calls it. Same output shape either way; the median of
``--runs`` timings.

    OMP_NUM_THREADS=1 python benchmarks/preprocess.py            # both SmolVLM sizes, 12 tiles + overview
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

# (name, native tile px, the processor's default longest edge): SmolVLM-Instruct (2.25B) and
# SmolVLM-256M-Instruct (its preprocessor_config.json in ../shared/models).
MODELS = [("SmolVLM-Instruct", 384, 1536), ("SmolVLM-256M-Instruct", 512, 2048)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=12, help="kept tiles per question (plus one overview)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--doc", default=str(ROOT / "sample_docs" / "invoice.pdf"))
    args = ap.parse_args(argv)

    import torch
    from transformers import Idefics3ImageProcessorPil

    from docvqa_cli.reading import documents, tiles

    page = documents.load(args.doc)[0]
    print(f"# {Path(args.doc).name} page 1 at {page.image.width}x{page.image.height} px; torch threads "
          f"{torch.get_num_threads()}; median of {args.runs}")
    print("| model | images | before ms | after ms | speed-up | same shape |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, tile_px, longest in MODELS:
        processor = Idefics3ImageProcessorPil(size={"longest_edge": longest}, max_image_size={"longest_edge": tile_px},
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=1)
        kept = tiles.split(page, tile_px=tile_px, max_tiles=12)[: args.tiles]
        images = [t.image for t in kept] + [tiles.overview(page, max_px=tile_px)]

        def before():
            return processor(images=[images], do_image_splitting=False, return_tensors="pt")

        def after():
            return processor(images=[images], do_image_splitting=False, size={"longest_edge": tile_px},
                             return_tensors="pt")

        timings = {}
        shapes = {}
        for label, fn in (("before", before), ("after", after)):
            fn()  # warm-up
            runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                out = fn()
                runs.append(time.perf_counter() - t)
            timings[label] = statistics.median(runs)
            shapes[label] = tuple(out["pixel_values"].shape)
        print(f"| {name} ({tile_px} px) | {len(images)} | {timings['before'] * 1e3:.0f} | {timings['after'] * 1e3:.0f} "
              f"| {timings['before'] / timings['after']:.1f}x | {shapes['before'] == shapes['after']} {shapes['after']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
