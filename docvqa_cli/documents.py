"""Open a document and turn it into pages: an image, its words with boxes, its size.

PDF, PNG, JPEG and TIFF (each frame of a multi-frame TIFF is a page) all open through
PyMuPDF. Boxes are in PDF points with the origin at the top left; for images one pixel is
one point. Words come from the PDF text layer where a page has one, else from OCR
(``ocr.py``), done once per page.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import pymupdf
from PIL import Image

from docvqa_cli.errors import InputError, UsageError

DEFAULT_DPI = 150
# About 50 megapixels: an A4 page at 600 dpi is ~35 MP; a poster at 150 dpi is far more.
DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}

# What the words of a PDF page must amount to before we trust the text layer over OCR.
_MIN_TEXT_LAYER_CHARS = 3

pymupdf.TOOLS.mupdf_display_errors(False)
pymupdf.TOOLS.mupdf_display_warnings(False)


@dataclass(frozen=True)
class Word:
    """One word and its box in page points (origin top left)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int = 0  # words with the same line number on a page sit on one text line

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass
class Page:
    """A rendered page: ``image`` has ``scale`` pixels per point; words are in points."""

    doc: str  # the path as given
    number: int  # 1-based
    width: float  # points
    height: float  # points
    image: Image.Image
    scale: float  # image pixels per page point
    words: list[Word] = field(default_factory=list)
    source: str = "text"  # "text" (PDF text layer), "ocr:<engine>", or "none"

    def to_pixels(self, box: Sequence[float]) -> tuple[int, int, int, int]:
        s = self.scale
        return (
            max(0, int(math.floor(box[0] * s))),
            max(0, int(math.floor(box[1] * s))),
            min(self.image.width, int(math.ceil(box[2] * s))),
            min(self.image.height, int(math.ceil(box[3] * s))),
        )


def parse_pages(spec: str | None) -> list[int] | None:
    """``"1-3,7"`` -> [1, 2, 3, 7]; None or "" -> None (all pages)."""
    if spec is None or not spec.strip():
        return None
    pages: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if lo < 1 or hi < lo:
                    raise ValueError
                pages.extend(range(lo, hi + 1))
            else:
                n = int(part)
                if n < 1:
                    raise ValueError
                pages.append(n)
        except ValueError:
            raise UsageError(
                f"--pages: cannot read {part!r}; use 1-based numbers and ranges such as 1-3,7"
            ) from None
    return sorted(set(pages))


def _warn(msg: str) -> None:
    print(f"docq: {msg}", file=sys.stderr)


def open_document(path: str, data: bytes | None = None, password: str | None = None) -> pymupdf.Document:
    """Open ``path`` (or ``data`` read from it) with PyMuPDF, or raise InputError with the cause."""
    if data is None:
        if not os.path.exists(path):
            raise InputError(path, "no such file")
        if os.path.isdir(path):
            raise InputError(path, "is a folder, not a document")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if len(data) == 0:
        raise InputError(path, "the file is empty")
    kind = sniff(data)
    if kind is None:
        raise InputError(path, "not a PDF or an image docq can read (PDF, PNG, JPEG, TIFF)")
    try:
        doc = pymupdf.open(stream=data, filetype=kind)
    except Exception as exc:  # PyMuPDF raises several types for broken files
        what = "PDF" if kind == "pdf" else f"{kind.upper()} image"
        raise InputError(path, f"corrupt or truncated {what} ({_short(exc)})") from None
    if kind == "pdf" and doc.is_repaired and b"%%EOF" not in data[-2048:]:
        # MuPDF rebuilds a cut-off PDF from what is left and would silently lose pages.
        doc.close()
        raise InputError(path, "truncated PDF (it ends before its end-of-file marker)")
    if doc.needs_pass:
        if not password:
            raise InputError(path, "the PDF is encrypted; give its password with --password")
        if not doc.authenticate(password):
            raise InputError(path, "wrong password for the encrypted PDF (--password)")
    if doc.page_count == 0:
        raise InputError(path, "the document has no pages")
    return doc


def sniff(data: bytes) -> str | None:
    """The PyMuPDF filetype of ``data`` from its first bytes, or None."""
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return re.sub(r"^code=\d+: ", "", text[0])[:160]


def load(
    path: str,
    *,
    pages: Iterable[int] | None = None,
    dpi: int = DEFAULT_DPI,
    password: str | None = None,
    ocr: str | None = "rapidocr",
    ocr_lang: str = "eng",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
    warn: Callable[[str], None] = _warn,
) -> list[Page]:
    """Open ``path`` and return its pages, rendered, with words (text layer or OCR).

    ``ocr`` names the engine for pages without a text layer (``None`` leaves them wordless).
    Raises InputError naming the file and the cause for anything unreadable.
    """
    return list(iter_pages(path, pages=pages, dpi=dpi, password=password, ocr=ocr,
                           ocr_lang=ocr_lang, max_pixels=max_pixels, data=data, warn=warn))


def iter_pages(
    path: str,
    *,
    pages: Iterable[int] | None = None,
    dpi: int = DEFAULT_DPI,
    password: str | None = None,
    ocr: str | None = "rapidocr",
    ocr_lang: str = "eng",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
    warn: Callable[[str], None] = _warn,
) -> Iterator[Page]:
    """Like ``load``, one page at a time, for callers that need not hold every page.

    The document is opened and the page range checked now (InputError at once); pages are
    rendered as they are taken. Holding every rendered page costs memory that must be touched
    for the first time (about 9 MB for an A4 page at 150 dpi), which is most of the difference
    between ``load`` and this on a long document (benchmarks/RESULTS.md).
    """
    if dpi < 36 or dpi > 1200:
        raise UsageError("--dpi must be between 36 and 1200")
    doc = open_document(path, data=data, password=password)
    wanted = list(pages) if pages is not None else list(range(1, doc.page_count + 1))
    for n in wanted:
        if n < 1 or n > doc.page_count:
            count = doc.page_count
            doc.close()
            raise InputError(path, f"page {n} is out of range (the document has {count})")
    return _pages(path, doc, wanted, dpi, ocr, ocr_lang, max_pixels, warn)


def _pages(path, doc, wanted, dpi, ocr, ocr_lang, max_pixels, warn) -> Iterator[Page]:
    try:
        is_pdf = doc.is_pdf
        for n in wanted:
            try:
                page = _load_page(path, doc, is_pdf, n, dpi, ocr, ocr_lang, max_pixels, warn)
            except InputError:
                raise
            except Exception as exc:
                if not is_pdf:
                    raise InputError(path, f"corrupt or truncated image ({_short(exc)})") from None
                raise InputError(path, f"page {n} cannot be rendered ({_short(exc)})") from None
            yield page
    finally:
        doc.close()


def _load_page(path, doc, is_pdf, n, dpi, ocr, ocr_lang, max_pixels, warn) -> Page:
    page = doc[n - 1]
    if is_pdf:
        width, height = page.rect.width, page.rect.height
        scale = dpi / 72.0
    else:
        # An image: one pixel is one point. PyMuPDF sizes image pages by their resolution,
        # so render at the zoom that gives back the native pixels.
        native_w, native_h = _native_size(page)
        width, height = float(native_w), float(native_h)
        scale = 1.0
    if width <= 0 or height <= 0:
        raise InputError(path, f"page {n} has no area")
    pixels = width * scale * height * scale
    if pixels > max_pixels:
        new_scale = scale * math.sqrt(max_pixels / pixels)
        warn(
            f"{path}: page {n} would render at {int(width * scale)}x{int(height * scale)} pixels, "
            f"over the cap of {max_pixels:,}; downscaled to {int(width * new_scale)}x{int(height * new_scale)}"
        )
        scale = new_scale
    zoom_x = scale * width / page.rect.width
    zoom_y = scale * height / page.rect.height
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom_x, zoom_y), alpha=False, colorspace=pymupdf.csRGB)
    # samples_mv: a view of the pixmap, so Pillow copies the pixels once, not twice.
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv)
    # The scale actually rendered (the pixmap's size is rounded to whole pixels).
    scale = image.width / width

    words: list[Word] = []
    source = "none"
    if is_pdf:
        words = _text_layer_words(page)
        if sum(len(w.text) for w in words) >= _MIN_TEXT_LAYER_CHARS:
            source = "text"
        else:
            words = []
    if not words and ocr:
        from docvqa_cli import ocr as ocr_mod

        pixel_words = ocr_mod.read_words(image, engine=ocr, lang=ocr_lang)
        words = [
            Word(w.text, w.x0 / scale, w.y0 / scale, w.x1 / scale, w.y1 / scale, w.line)
            for w in pixel_words
        ]
        source = f"ocr:{ocr}"
    return Page(
        doc=path,
        number=n,
        width=width,
        height=height,
        image=image,
        scale=scale,
        words=words,
        source=source,
    )


def _native_size(page: pymupdf.Page) -> tuple[int, int]:
    """Pixel size of the image behind an image-document page."""
    try:
        info = page.get_image_info()
        if info:
            return int(info[0]["width"]), int(info[0]["height"])
    except Exception:
        pass
    pix = page.get_pixmap(alpha=False)
    return pix.width, pix.height


def _text_layer_words(page: pymupdf.Page) -> list[Word]:
    """Words of the PDF text layer, in points, with a per-page line number."""
    raw = page.get_text("words", sort=False)
    rot = page.rotation_matrix if page.rotation else None
    lines: dict[tuple[int, int], int] = {}
    words = []
    for x0, y0, x1, y1, text, block, line, _ in raw:
        if not text.strip():
            continue
        if rot is not None:
            r = pymupdf.Rect(x0, y0, x1, y1) * rot
            x0, y0, x1, y1 = r.x0, r.y0, r.x1, r.y1
        key = (block, line)
        if key not in lines:
            lines[key] = len(lines)
        words.append(Word(text, x0, y0, x1, y1, lines[key]))
    return words

