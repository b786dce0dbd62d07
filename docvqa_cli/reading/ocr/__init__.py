"""Words with boxes for pages without a text layer: one registry, one module per engine.

Each module of this package is one engine: it builds an ``Engine`` (its name, the function
that reads an image, the check that runs before any work) and ``register``s it; they are all
imported with the package, so ``ENGINES`` (the ``--ocr`` choices) lists every one. Adding an
engine is one new module here plus its tests (ARCHITECTURE.md, "Adding things").

Engines: ``rapidocr`` (the default: PP-OCR models carried in the PyPI wheel, offline; read
the total on 24 of the 24 dev receipts) and ``tesseract`` (the Debian program, for its many
languages via ``--ocr-lang``; read 20 of 24 there, with page segmentation mode 6). Boxes
come back in image pixels (``ocr.Word``); ``documents`` converts them to page points.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, NamedTuple

from PIL import Image

from docvqa_cli.errors import UsageError
from docvqa_cli.options import DEFAULT_OCR as DEFAULT_ENGINE
from docvqa_cli.options import DEFAULT_OCR_LANG


class Word(NamedTuple):
    """One word an engine read, its box in image pixels; ``documents`` turns it into a
    ``documents.Word`` in page points."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int = 0  # words with the same number sit on one text line of the image


def _no_check(lang: str) -> None:
    return None


@dataclass(frozen=True)
class Engine:
    """One OCR engine. ``read(image, lang)`` returns its words with per-image line numbers;
    ``check(lang)`` raises ``EnvironmentProblem`` with the fix before any work when the engine
    cannot run with these languages (``lang`` is tesseract's ``eng+deu`` form)."""

    name: str
    read: Callable[[Image.Image, str], list[Word]]
    check: Callable[[str], None] = _no_check


_ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    """Make ``engine`` a choice of ``--ocr`` (its module calls this when imported)."""
    _ENGINES[engine.name] = engine
    return engine


def get(name: str) -> Engine:
    """The registered engine called ``name``, or UsageError listing the choices."""
    if name not in _ENGINES:
        raise UsageError(f"--ocr: unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return _ENGINES[name]


def read_words(image: Image.Image, engine: str = DEFAULT_ENGINE, lang: str = DEFAULT_OCR_LANG) -> list[Word]:
    """OCR ``image`` and return its words, boxes in pixels, with per-image line numbers."""
    return get(engine).read(image, lang)


def check(engine: str, lang: str = DEFAULT_OCR_LANG) -> None:
    """Before any work: the engine can run with these languages, or EnvironmentProblem with
    the fix (tesseract checks its program and languages; RapidOCR's models ship in its wheel
    and load on first use)."""
    get(engine).check(lang)


for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

# The --ocr choices, the default first.
ENGINES = tuple(sorted(_ENGINES, key=lambda name: (name != DEFAULT_ENGINE, name)))
