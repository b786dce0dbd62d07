"""Pages per second: text-layer PDF pages (open, render, words, tiles) and OCR'd scans.

    python benchmarks/speed_pages.py [--pages 100] [--dpi 150] [--scans 4] [--engines rapidocr,tesseract]
                                     [--profile]

Text layer: a 100-page PDF (the sample invoice, repeated) is written to a temporary folder;
PyMuPDF alone (open, render at the DPI to RGB, words) is timed first as the floor, then
docq (``documents.iter_pages`` and ``documents.load`` + ``tiles.split`` of every page). Scans: the sample receipt and an
A4 invoice rasterised at 150 dpi (no text layer), OCR'd by ``documents.load`` with each
engine after one warm-up call. ``--profile`` prints where docq's text-layer time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402
from PIL import Image  # noqa: E402

from docvqa_cli.reading import documents, ocr, tiles  # noqa: E402

SAMPLES = ROOT / "sample_docs"


def make_pdf(folder: Path, pages: int) -> Path:
    src = pymupdf.open(SAMPLES / "invoice.pdf")
    doc = pymupdf.open()
    for _ in range(pages):
        doc.insert_pdf(src)
    path = folder / f"pages{pages}.pdf"
    doc.save(path)
    return path


def make_scan(folder: Path, dpi: int = 150) -> Path:
    with pymupdf.open(SAMPLES / "invoice.pdf") as doc:
        pix = doc[0].get_pixmap(dpi=dpi)
    path = folder / "invoice_scan.png"
    Image.frombytes("RGB", (pix.width, pix.height), pix.samples).save(path)
    return path


def pymupdf_alone(path: Path, dpi: int) -> float:
    t0 = time.perf_counter()
    with pymupdf.open(path) as doc:
        for page in doc:
            page.get_pixmap(dpi=dpi, colorspace=pymupdf.csRGB, alpha=False)
            page.get_text("words")
    return time.perf_counter() - t0


def docq_text_pages(path: Path, dpi: int, hold: bool = True) -> tuple[float, int, int]:
    """docq on every page: open, render, words, tiles. ``hold``: keep every page (``load``)
    rather than take them one at a time (``iter_pages``) and let each go after tiling."""
    t0 = time.perf_counter()
    n = n_tiles = 0
    held = []
    pages = documents.load(str(path), dpi=dpi) if hold else documents.iter_pages(str(path), dpi=dpi)
    for page in pages:
        assert page.source == "text" and page.words and page.image.width > 0
        n_tiles += len(tiles.split(page))
        n += 1
        if hold:
            held.append(page)
    elapsed = time.perf_counter() - t0
    return elapsed, n, n_tiles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--dpi", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3, help="text-layer runs; the best is reported")
    ap.add_argument("--scans", type=int, default=4, help="OCR'd pages per engine (half receipt, half A4)")
    ap.add_argument("--engines", default=",".join(ocr.ENGINES))
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, PyMuPDF {pymupdf.VersionBind}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pdf = make_pdf(folder, args.pages)
        base = min(pymupdf_alone(pdf, args.dpi) for _ in range(args.repeat))
        print(f"PyMuPDF alone (open, render {args.dpi} dpi, words): {args.pages / base:.1f} pages/s")
        for hold, how in ((False, "iter_pages, one page at a time"), (True, "load, every page held")):
            best = None
            for _ in range(args.repeat):
                elapsed, n, n_tiles = docq_text_pages(pdf, args.dpi, hold)
                best = elapsed if best is None else min(best, elapsed)
            print(f"docq text layer ({how}; + tiles.split, {n_tiles} tiles): {n / best:.1f} pages/s "
                  f"({1000 * best / n:.1f} ms/page; PyMuPDF alone {1000 * base / n:.1f} ms/page)", flush=True)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(docq_text_pages, pdf, args.dpi, True)
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)

        scans = [SAMPLES / "receipt.png", make_scan(folder)]
        for engine in [e for e in args.engines.split(",") if e]:
            documents.load(str(scans[0]), ocr=engine)  # warm-up: RapidOCR loads its models
            t0 = time.perf_counter()
            done = 0
            for i in range(args.scans):
                documents.load(str(scans[i % len(scans)]), ocr=engine)
                done += 1
            elapsed = time.perf_counter() - t0
            print(f"docq OCR {engine} ({done} scans: 531x683 receipt and 1240x1754 A4, alternating): "
                  f"{done / elapsed:.2f} pages/s ({elapsed / done:.2f} s/page)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
