"""RapidOCR, the default engine: PP-OCR models carried in the PyPI wheel (offline).

It reads lines; a line becomes words from RapidOCR's own word boxes where they rebuild the
line's text, else by splitting the line box in proportion to character counts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from docvqa_cli.errors import EnvironmentProblem
from docvqa_cli.ocr import Engine, Word, register


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


ENGINE = register(Engine("rapidocr", read))
