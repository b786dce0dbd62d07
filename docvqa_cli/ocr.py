"""Words with boxes for pages without a text layer: one module, one function per engine.

Engines: ``rapidocr`` (the default: PP-OCR models carried in the PyPI wheel, offline; read
the total on 24 of the 24 dev receipts) and ``tesseract`` (the Debian program, for its many
languages via ``--ocr-lang``; read 20 of 24 there, with page segmentation mode 6). Boxes
come back in image pixels (``ocr.Word``); ``documents`` converts them to page points.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image

from docvqa_cli.errors import EnvironmentProblem, UsageError
from docvqa_cli.options import DEFAULT_OCR as DEFAULT_ENGINE
from docvqa_cli.options import DEFAULT_OCR_LANG

ENGINES = ("rapidocr", "tesseract")
# Tesseract page segmentation mode 6 (one uniform block of text): on the 24 dev receipts it
# read 20 totals, against 19 with mode 4 and 16 with the default mode 3, which drops lines
# it takes for pictures (benchmarks/RESULTS.md).
TESSERACT_PSM = 6


class Word(NamedTuple):
    """One word an engine read, its box in image pixels; ``documents`` turns it into a
    ``documents.Word`` in page points."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int = 0


def read_words(image: Image.Image, engine: str = DEFAULT_ENGINE, lang: str = DEFAULT_OCR_LANG) -> list[Word]:
    """OCR ``image`` and return its words, boxes in pixels, with per-image line numbers."""
    if engine == "rapidocr":
        return _rapidocr(image)
    if engine == "tesseract":
        return _tesseract(image, lang)
    raise UsageError(f"--ocr: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


@lru_cache(maxsize=1)
def _rapidocr_engine():
    try:
        from rapidocr import RapidOCR
    except ImportError:
        raise EnvironmentProblem(
            "RapidOCR is missing: `pip install rapidocr onnxruntime`, or use --ocr tesseract"
        ) from None
    import logging

    engine = RapidOCR()
    # RapidOCR logs every call at INFO to stderr; docq keeps stderr for what matters.
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return engine


def _rapidocr(image: Image.Image) -> list[Word]:
    engine = _rapidocr_engine()
    result = engine(np.asarray(image.convert("RGB")), return_word_box=True)
    if result.boxes is None or result.txts is None:
        return []
    words: list[Word] = []
    word_results = result.word_results or ()
    for line_no, (line_box, text) in enumerate(zip(result.boxes, result.txts)):
        parts = word_results[line_no] if line_no < len(word_results) else ()
        parts = [p for p in parts if p and str(p[0]).strip()]
        if parts and _is_word_split(parts, text):
            for part_text, _score, quad in parts:
                words.append(Word(str(part_text), *_quad_box(quad), line=line_no))
        else:
            words.extend(_split_line(text, line_box, line_no))
    return words


def _is_word_split(parts, text: str) -> bool:
    # RapidOCR splits CJK lines into characters; keep its split only when it gives words
    # that rebuild the line's text (spaces aside).
    joined = "".join(str(p[0]) for p in parts).replace(" ", "")
    return joined == text.replace(" ", "") and (" " in text.strip()) == (len(parts) > 1)


def _quad_box(quad) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in quad]
    ys = [float(p[1]) for p in quad]
    return min(xs), min(ys), max(xs), max(ys)


def _split_line(text: str, quad, line_no: int) -> list[Word]:
    """Split a line box into word boxes in proportion to character counts."""
    x0, y0, x1, y1 = _quad_box(quad)
    tokens = text.split()
    if not tokens:
        return []
    total = len(text)
    per_char = (x1 - x0) / max(total, 1)
    words, pos = [], 0
    for tok in tokens:
        start = text.index(tok, pos)
        end = start + len(tok)
        words.append(Word(tok, x0 + start * per_char, y0, x0 + end * per_char, y1, line_no))
        pos = end
    return words


def check(engine: str, lang: str = DEFAULT_OCR_LANG) -> None:
    """Before any work: the engine can run with these languages, or EnvironmentProblem with
    the fix (tesseract only; RapidOCR's models ship in its wheel and load on first use).
    An unknown engine is a UsageError naming the known ones."""
    if engine not in ENGINES:
        raise UsageError(f"--ocr: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "rapidocr" and lang != DEFAULT_OCR_LANG:
        # Only the Chinese/English models ship in RapidOCR's wheel; others would be downloaded.
        raise UsageError(f"--ocr-lang {lang}: RapidOCR reads only the languages of its bundled model (English and "
                         f"Chinese, offline); for {lang} use --ocr tesseract --ocr-lang {lang}")
    if engine != "tesseract":
        return
    if not tesseract_path():
        _tesseract(None, lang)  # raises the missing-program problem with its fix
    have = set(tesseract_languages())
    missing = [code for code in lang.split("+") if code and code not in have]
    if missing:
        raise EnvironmentProblem(
            f"--ocr-lang: tesseract has no language {', '.join(missing)} (installed: {', '.join(sorted(have)) or 'none'}); "
            f"apt-get install " + " ".join(f"tesseract-ocr-{code}" for code in missing))


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def tesseract_languages() -> list[str]:
    exe = tesseract_path()
    if not exe:
        return []
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30)
    lines = (out.stdout or out.stderr).splitlines()
    return [ln.strip() for ln in lines[1:] if ln.strip()]


def _tesseract(image: Image.Image, lang: str) -> list[Word]:
    exe = tesseract_path()
    if not exe:
        raise EnvironmentProblem(
            "tesseract is missing: `apt-get install tesseract-ocr tesseract-ocr-eng` "
            "(or `brew install tesseract`), or use --ocr rapidocr"
        )
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    proc = subprocess.run(
        [exe, "stdin", "stdout", "-l", lang, "--psm", str(TESSERACT_PSM), "tsv"],
        input=buf.getvalue(),
        capture_output=True,
        timeout=600,
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = msg[-1] if msg else f"exit code {proc.returncode}"
        if "Failed loading language" in proc.stderr.decode("utf-8", "replace"):
            detail = f"language {lang!r} is not installed (apt-get install tesseract-ocr-{lang})"
        raise EnvironmentProblem(f"tesseract failed: {detail}")
    reader = csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "replace")), delimiter="\t",
                            quoting=csv.QUOTE_NONE)
    words: list[Word] = []
    lines: dict[tuple[str, str, str, str], int] = {}
    for row in reader:
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        line_no = lines.setdefault(key, len(lines))
        x, y, w, h = (float(row[k]) for k in ("left", "top", "width", "height"))
        words.append(Word(text, x, y, x + w, y + h, line_no))
    return words
