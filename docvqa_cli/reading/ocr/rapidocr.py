"""RapidOCR, the default engine: PP-OCR models carried in the PyPI wheel (offline).

It reads lines; a line becomes words from RapidOCR's own word boxes where they rebuild the
line's text and are words (not single characters), else by splitting the line box in
proportion to character counts. Fullwidth and other compatibility characters are NFKC-
normalised first.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import numpy as np
from PIL import Image

from docvqa_cli.errors import EnvironmentProblem, UsageError
from docvqa_cli.options import DEFAULT_OCR_LANG
from docvqa_cli.reading.ocr import Engine, Word, register


@lru_cache(maxsize=1)
def _engine():
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


def read(image: Image.Image, lang: str = "eng") -> list[Word]:
    """The words of ``image`` (``lang`` is not used: the wheel's models are multilingual)."""
    engine = _engine()
    result = engine(np.asarray(image.convert("RGB")), return_word_box=True)
    if result.boxes is None or result.txts is None:
        return []
    return line_words(result.boxes, result.txts, result.word_results or ())


def line_words(boxes, txts, word_results) -> list[Word]:
    """Words from RapidOCR's lines (``boxes``, ``txts``) and its per-line word parts.

    Text holding fullwidth punctuation or other compatibility characters is NFKC-normalised
    first (``（`` -> ``(``, ``：`` -> ``:``). A line's parts become its words when they
    rebuild its text and are words; a line cut into mostly single characters (RapidOCR's
    CJK mode, also taken for Latin lines with a fullwidth bracket) is split at its spaces.
    """
    words: list[Word] = []
    for line_no, (line_box, text) in enumerate(zip(boxes, txts)):
        text = _nfkc(str(text))
        parts = word_results[line_no] if line_no < len(word_results) else ()
        parts = [(_nfkc(str(p[0])), p[1], p[2]) for p in parts if p and str(p[0]).strip()]
        if parts and _is_word_split(parts, text) and not _characters(parts, text):
            for part_text, _score, quad in parts:
                words.append(Word(part_text, *_quad_box(quad), line=line_no))
        else:
            words.extend(_split_line(text, line_box, line_no))
    return words


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _characters(parts, text: str) -> bool:
    """Whether the parts are mostly single characters of a line that has longer words."""
    singles = sum(1 for p in parts if len(p[0].strip()) == 1)
    tokens = text.split()
    return len(parts) >= 4 and singles >= 0.6 * len(parts) and len(tokens) < 0.5 * len(parts)


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


def check(lang: str) -> None:
    """Only the default language: the wheel carries the English/Chinese models; others would be
    downloaded from the internet, so docq refuses them and names the engine that has them."""
    if lang != DEFAULT_OCR_LANG:
        raise UsageError(f"--ocr-lang {lang}: RapidOCR reads only the languages of its bundled model (English and "
                         f"Chinese, offline); for {lang} use --ocr tesseract --ocr-lang {lang}")


ENGINE = register(Engine("rapidocr", read, check))
