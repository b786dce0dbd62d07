"""Shared fixtures: real documents made with PyMuPDF in a temporary folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pymupdf
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_docs"
DEV_DATA = Path(os.environ.get("DOCQ_DEV_DATA") or ROOT.parent / "shared" / "data" / "dev").resolve()  # a worktree: set it

INVOICE_LINES = [
    ((72, 72), "ACME Supplies Ltd", 18),
    ((72, 100), "12 Harbour Road, Leeds LS1 4AB", 10),
    ((400, 72), "INVOICE", 18),
    ((400, 100), "Invoice No: INV-20417", 10),
    ((400, 116), "Date: 14 March 2024", 10),
    ((72, 200), "Description", 11),
    ((420, 200), "Amount", 11),
    ((72, 222), "Printer paper, 10 boxes", 10),
    ((420, 222), "149.90", 10),
    ((72, 240), "Toner cartridge", 10),
    ((420, 240), "1,007.50", 10),
    ((300, 700), "Total due: EUR 1,157.40", 12),
]


def write_invoice_pdf(path: Path, lines=INVOICE_LINES, pages: int = 1) -> Path:
    doc = pymupdf.open()
    for n in range(pages):
        page = doc.new_page(width=595, height=842)  # A4 in points
        for (x, y), text, size in lines:
            page.insert_text((x, y), text, fontsize=size, fontname="helv")
        if pages > 1:
            page.insert_text((280, 820), f"Page {n + 1} of {pages}", fontsize=8)
    doc.save(path)
    doc.close()
    return path


def write_scan(path: Path, dpi: int = 100, rotate: float = 0.0) -> Path:
    """A rasterised copy of the invoice (no text layer), as PNG/JPEG/TIFF by suffix."""
    pdf = write_invoice_pdf(path.with_suffix(".src.pdf"))
    doc = pymupdf.open(pdf)
    pix = doc[0].get_pixmap(dpi=dpi)
    from PIL import Image

    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    if rotate:
        img = img.rotate(rotate, expand=True, fillcolor="white")
    img.save(path)
    doc.close()
    os.remove(pdf)
    return path


@pytest.fixture
def invoice_pdf(tmp_path) -> Path:
    return write_invoice_pdf(tmp_path / "invoice.pdf")


@pytest.fixture
def scan_png(tmp_path) -> Path:
    return write_scan(tmp_path / "scan.png")


@pytest.fixture
def docq_env() -> dict:
    """Environment for running `python -m docvqa_cli` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(autouse=True)
def _float32_on_every_cpu(monkeypatch):
    """``--dtype auto`` is bf16 on a CPU with native bf16 (AMX, AVX512-BF16): the tests compare
    tokens and records exactly, so they run in float32 on every CPU, as on one without."""
    try:
        from docvqa_cli.vlm import load
    except ImportError:
        return
    monkeypatch.setattr(load, "cpu_has_native_bf16", lambda cpuinfo=None: False)
