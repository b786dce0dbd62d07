"""Open a document and turn it into pages: an image, its words with boxes, its size.

PDF, PNG, JPEG and TIFF (each frame of a multi-frame TIFF is a page) all open through
PyMuPDF. Boxes are in PDF points with the origin at the top left; for images one pixel is
one point. Words come from the PDF text layer where a page has one, else from OCR
(``ocr/``, one module per engine), done once per page.
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

from docvqa_cli.errors import DocqError, InputError, UsageError
from docvqa_cli.options import DEFAULT_DPI, DEFAULT_OCR, DEFAULT_OCR_LANG

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


@dataclass(eq=False)
class Page:
    """A page: its words in points and its image at ``scale`` pixels per point.

    The image of a page is rendered the first time something asks for it (a kept tile, an
    overview, a picture), so pages that no question needs cost their words only; scans and
    image files are rendered once for OCR, and those pixels are let go again.
    """

    doc: str  # the path as given
    number: int  # 1-based
    width: float  # points
    height: float  # points
    _image: Image.Image | None = field(default=None, repr=False)
    scale: float = 1.0  # image pixels per page point
    words: list[Word] = field(default_factory=list)
    source: str = "text"  # "text" (PDF text layer), "ocr:<engine>", or "none"
    render: Callable[[], Image.Image] | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            if self.render is None:
                raise ValueError(f"{self.doc}: page {self.number} has no image")
            self._image = self.render()
        return self._image

    @property
    def rendered(self) -> bool:
        return self._image is not None

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height) of the image in pixels, known without rendering it."""
        if self._image is not None:
            return self._image.size
        return (max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale)))

    def to_pixels(self, box: Sequence[float]) -> tuple[int, int, int, int]:
        s = self.scale
        w, h = self.pixel_size
        return (
            max(0, int(math.floor(box[0] * s))),
            max(0, int(math.floor(box[1] * s))),
            min(w, int(math.ceil(box[2] * s))),
            min(h, int(math.ceil(box[3] * s))),
        )


class _Source:
    """A document's bytes, opened once for the lazy renders of its pages (picklable)."""

    def __init__(self, data: bytes, password: str | None, kind: str = "pdf"):
        self.data, self.password, self.kind, self._doc = data, password, kind, None

    def page(self, number: int) -> pymupdf.Page:
        if self._doc is None:
            self._doc = pymupdf.open(stream=self.data, filetype=self.kind)
            if self._doc.needs_pass:
                self._doc.authenticate(self.password or "")
        return self._doc[number - 1]

    def __getstate__(self):
        return {"data": self.data, "password": self.password, "kind": self.kind, "_doc": None}


class _Renderer:
    """Renders one PDF page when called; the image has exactly the size promised by the Page."""

    def __init__(self, source: _Source, number: int, zoom: tuple[float, float], size: tuple[int, int]):
        self.source, self.number, self.zoom, self.size = source, number, zoom, size

    def __call__(self) -> Image.Image:
        image = _render(self.source.page(self.number), *self.zoom)
        if image.size != self.size:  # the pixmap's size is rounded; keep the promised one
            image = image.resize(self.size, Image.Resampling.BILINEAR)
        return image


def _render(page: pymupdf.Page, zoom_x: float, zoom_y: float) -> Image.Image:
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom_x, zoom_y), alpha=False, colorspace=pymupdf.csRGB)
    # samples_mv: a view of the pixmap, so Pillow copies the pixels once, not twice.
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv)


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


def _why_missing(path: str) -> str:
    """Why ``path`` cannot be found: a symbolic-link loop, a link to a missing file, or none."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic-link loop (the link leads back to itself); fix or remove the link"
        if os.path.islink(path):
            return f"a symbolic link to a missing file ({os.readlink(path)})"
    return "no such file"


def read_bytes(path: str) -> bytes:
    """The file's bytes, or InputError saying why they cannot be read."""
    if not os.path.exists(path):
        raise InputError(path, _why_missing(path))
    if os.path.isdir(path):
        raise InputError(path, "is a folder, not a document")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None


def open_document(path: str, data: bytes | None = None, password: str | None = None) -> pymupdf.Document:
    """Open ``path`` (or ``data`` read from it) with PyMuPDF, or raise InputError with the cause."""
    if data is None:
        data = read_bytes(path)
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


def load(path: str, **options) -> list[Page]:
    """Open ``path`` and return all its pages with their words (text layer or OCR); the
    options are ``iter_pages``'s. ``ocr`` names the engine for pages without a text layer
    (``None`` leaves them wordless). Raises InputError naming the file and the cause for
    anything unreadable."""
    return list(iter_pages(path, **options))


def iter_pages(
    path: str,
    *,
    pages: Iterable[int] | None = None,
    dpi: int = DEFAULT_DPI,
    password: str | None = None,
    ocr: str | None = DEFAULT_OCR,
    ocr_lang: str = DEFAULT_OCR_LANG,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
    warn: Callable[[str], None] = _warn,
) -> Iterator[Page]:
    """The pages of ``path`` one at a time, for callers that need not hold every page
    (``load`` collects them).

    The document is opened and the page range checked now (InputError at once); pages are
    rendered as they are taken. Holding every rendered page costs memory that must be touched
    for the first time (about 9 MB for an A4 page at 150 dpi), which is most of the difference
    between ``load`` and this on a long document (benchmarks/RESULTS.md).
    """
    if dpi < 36 or dpi > 1200:
        raise UsageError("--dpi must be between 36 and 1200")
    if data is None:
        data = read_bytes(path)
    doc = open_document(path, data=data, password=password)
    wanted = list(pages) if pages is not None else list(range(1, doc.page_count + 1))
    outside = [n for n in wanted if n < 1 or n > doc.page_count]
    if outside:
        count = doc.page_count
        doc.close()
        if len(outside) == 1:
            what = f"page {outside[0]} is"
        elif outside == list(range(outside[0], outside[-1] + 1)):
            what = f"pages {outside[0]}-{outside[-1]} are"
        else:
            what = f"pages {', '.join(map(str, outside))} are"
        raise InputError(path, f"{what} out of range (the document has {count} page{'s' if count != 1 else ''})")
    return _pages(path, doc, wanted, dpi, ocr, ocr_lang, max_pixels, warn, data, password)


def _pages(path, doc, wanted, dpi, ocr, ocr_lang, max_pixels, warn, data, password) -> Iterator[Page]:
    try:
        is_pdf = doc.is_pdf
        lazy = _Source(data, password, sniff(data) or "pdf") if data is not None else None
        for n in wanted:
            try:
                page = _load_page(path, doc, is_pdf, n, dpi, ocr, ocr_lang, max_pixels, warn, lazy)
            except DocqError:  # input, environment (an OCR engine) and usage problems say their own cause
                raise
            except Exception as exc:
                if not is_pdf:
                    raise InputError(path, f"corrupt or truncated image ({_short(exc)})") from None
                raise InputError(path, f"page {n} cannot be rendered ({_short(exc)})") from None
            yield page
    finally:
        doc.close()


def _load_page(path, doc, is_pdf, n, dpi, ocr, ocr_lang, max_pixels, warn, lazy=None) -> Page:
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

    words: list[Word] = []
    source = "none"
    if is_pdf:
        words = _text_layer_words(page)
        if sum(len(w.text) for w in words) >= _MIN_TEXT_LAYER_CHARS:
            source = "text"
        else:
            words = []
    if words and lazy is not None:
        # A text layer: render later, only if a tile of this page is kept.
        irect = (page.rect * pymupdf.Matrix(zoom_x, zoom_y)).irect  # the pixmap's size, as MuPDF rounds it
        size = (max(1, irect.width), max(1, irect.height))
        scale = size[0] / width
        return Page(doc=path, number=n, width=width, height=height, scale=scale, words=words, source=source,
                    render=_Renderer(lazy, n, (zoom_x, zoom_y), size))
    image = _render(page, zoom_x, zoom_y)
    # The scale actually rendered (the pixmap's size is rounded to whole pixels).
    scale = image.width / width
    if not words and ocr:
        from docvqa_cli.reading import ocr as ocr_mod

        pixel_words = ocr_mod.read_words(image, engine=ocr, lang=ocr_lang)
        words = [
            Word(w.text, w.x0 / scale, w.y0 / scale, w.x1 / scale, w.y1 / scale, w.line)
            for w in pixel_words
        ]
        source = f"ocr:{ocr}"
    if lazy is not None:
        # The pixels were needed for OCR only: let them go and render again if a tile of this
        # page is kept, so a 500-frame TIFF holds its words, not 500 images (prompt_cap.py).
        return Page(doc=path, number=n, width=width, height=height, scale=scale, words=words, source=source,
                    render=_Renderer(lazy, n, (zoom_x, zoom_y), image.size))
    return Page(
        doc=path,
        number=n,
        width=width,
        height=height,
        _image=image,
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

