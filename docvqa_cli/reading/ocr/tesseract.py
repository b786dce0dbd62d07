"""Tesseract, the Debian program, for its many languages (``--ocr tesseract --ocr-lang
eng+deu``); run as a subprocess that writes TSV, one row per word."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

from PIL import Image

from docvqa_cli.errors import EnvironmentProblem
from docvqa_cli.reading.ocr import Engine, Word, register

# Tesseract page segmentation mode 6 (one uniform block of text): on the 24 dev receipts it
# read 20 totals, against 19 with mode 4 and 16 with the default mode 3, which drops lines
# it takes for pictures (benchmarks/RESULTS.md).
TESSERACT_PSM = 6


def path() -> str | None:
    """The tesseract program, or None when it is not installed."""
    return shutil.which("tesseract")


def languages() -> list[str]:
    """The languages tesseract has installed (empty without the program)."""
    exe = path()
    if not exe:
        return []
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30)
    lines = (out.stdout or out.stderr).splitlines()
    return [ln.strip() for ln in lines[1:] if ln.strip()]


def _missing_program() -> EnvironmentProblem:
    return EnvironmentProblem(
        "tesseract is missing: `apt-get install tesseract-ocr tesseract-ocr-eng` "
        "(or `brew install tesseract`), or use --ocr rapidocr"
    )


def check(lang: str = "eng") -> None:
    """The program is there and has every language of ``lang`` (``eng+deu``)."""
    if not path():
        raise _missing_program()
    have = set(languages())
    missing = [code for code in lang.split("+") if code and code not in have]
    if missing:
        raise EnvironmentProblem(
            f"--ocr-lang: tesseract has no language {', '.join(missing)} (installed: {', '.join(sorted(have)) or 'none'}); "
            f"apt-get install " + " ".join(f"tesseract-ocr-{code}" for code in missing))


def read(image: Image.Image, lang: str = "eng") -> list[Word]:
    exe = path()
    if not exe:
        raise _missing_program()
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


ENGINE = register(Engine("tesseract", read, check))
