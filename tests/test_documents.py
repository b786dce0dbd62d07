"""documents.load on real files: text-layer words and boxes, images, TIFF frames, page
ranges, passwords, the pixel cap, and every kind of bad input the issue lists."""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from conftest import SAMPLES, write_invoice_pdf
from docvqa_cli.errors import InputError, UsageError
from docvqa_cli.reading import documents


def _dark_fraction(page: documents.Page, box) -> float:
    """Share of dark pixels inside ``box`` (points) on the rendered page."""
    crop = page.image.crop(page.to_pixels(box)).convert("L")
    hist = crop.histogram()
    return sum(hist[:128]) / max(1, sum(hist))


# --- PDFs with a text layer -------------------------------------------------------------

def test_text_layer_word_box_is_where_it_was_drawn(tmp_path):
    # "INVOICE" is drawn with its baseline starting at (400, 72), 18 pt Helvetica.
    page = documents.load(str(write_invoice_pdf(tmp_path / "inv.pdf")), ocr=None)[0]
    assert page.source == "text" and (page.width, page.height) == (595, 842)
    word = next(w for w in page.words if w.text == "INVOICE")
    assert word.x0 == pytest.approx(400, abs=1)
    assert word.y0 < 72 < word.y1  # the baseline lies inside the box
    assert 14 < word.y1 - word.y0 < 26  # about one 18 pt line high
    assert word.x1 - word.x0 == pytest.approx(pymupdf.get_text_length("INVOICE", "helv", 18), abs=1)
    # The rendered image has ink exactly there, and none in an empty strip beside it.
    assert page.scale == pytest.approx(150 / 72, rel=0.01)
    assert _dark_fraction(page, word.box) > 0.1
    assert _dark_fraction(page, (word.x1 + 40, word.y0, word.x1 + 80, word.y1)) == 0
    # Words of one text line share a line number; different lines differ.
    date = [w for w in page.words if w.text in ("Date:", "14", "March", "2024")]
    assert len({w.line for w in date}) == 1 and date[0].line != word.line


def test_sample_invoice_and_contract_hold_their_answers():
    inv = documents.load(str(SAMPLES / "invoice.pdf"))
    assert len(inv) == 1 and inv[0].source == "text"
    texts = [w.text for w in inv[0].words]
    for answer in ("1,629.72", "NW-2024-0173", "1,358.10", "271.62"):
        assert answer in texts
    contract = documents.load(str(SAMPLES / "contract.pdf"), pages=[3])
    assert [p.number for p in contract] == [3]
    assert "4,750.00" in [w.text for w in contract[0].words]


def test_rotated_pdf_page_words_match_the_rendered_image(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    page.insert_text((50, 60), "Rotated", fontsize=20)
    page.set_rotation(90)
    doc.save(tmp_path / "rot.pdf")
    p = documents.load(str(tmp_path / "rot.pdf"), dpi=72, ocr=None)[0]
    assert (p.width, p.height) == (300, 400)  # as displayed
    assert p.image.size == (300, 400)
    word = next(w for w in p.words if w.text == "Rotated")
    assert word.y1 - word.y0 > word.x1 - word.x0  # runs down the page now
    assert _dark_fraction(p, word.box) > 0.05


# --- images and TIFF frames -------------------------------------------------------------

def test_image_is_one_pixel_per_point_whatever_its_dpi(tmp_path):
    img = Image.new("RGB", (640, 480), "white")
    img.save(tmp_path / "hi.jpg", dpi=(300, 300))
    page = documents.load(str(tmp_path / "hi.jpg"), ocr=None)[0]
    assert (page.width, page.height) == (640, 480)
    assert page.image.size == (640, 480) and page.scale == 1.0
    assert page.source == "none" and page.words == []


def test_multi_frame_tiff_gives_one_page_per_frame(tmp_path):
    frames = [Image.new("RGB", size, colour) for size, colour in
              (((300, 200), "white"), ((200, 300), "gray"), ((120, 80), "black"))]
    frames[0].save(tmp_path / "multi.tif", save_all=True, append_images=frames[1:])
    pages = documents.load(str(tmp_path / "multi.tif"), ocr=None)
    assert [p.number for p in pages] == [1, 2, 3]
    assert [p.image.size for p in pages] == [(300, 200), (200, 300), (120, 80)]
    assert [p.image.getpixel((5, 5)) for p in pages] == [(255, 255, 255), (128, 128, 128), (0, 0, 0)]
    assert [p.number for p in documents.load(str(tmp_path / "multi.tif"), pages=[2], ocr=None)] == [2]


# --- page ranges ------------------------------------------------------------------------

def test_parse_pages():
    assert documents.parse_pages("1-3,7") == [1, 2, 3, 7]
    assert documents.parse_pages(" 5, 2-3 ,2") == [2, 3, 5]
    assert documents.parse_pages(None) is None and documents.parse_pages("") is None
    for bad in ("0", "3-1", "a", "1-b", "-2"):
        with pytest.raises(UsageError, match="--pages"):
            documents.parse_pages(bad)


def test_page_range_reads_only_those_pages(tmp_path):
    pdf = write_invoice_pdf(tmp_path / "six.pdf", pages=6)
    pages = documents.load(str(pdf), pages=documents.parse_pages("2-3,6"))
    assert [p.number for p in pages] == [2, 3, 6]
    assert any(w.text == "6" for w in pages[2].words)  # "Page 6 of 6"


# --- passwords --------------------------------------------------------------------------

@pytest.fixture
def encrypted_pdf(tmp_path) -> Path:
    src = pymupdf.open(write_invoice_pdf(tmp_path / "plain.pdf"))
    path = tmp_path / "locked.pdf"
    src.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="s3cret", owner_pw="owner-pw")
    return path


def test_encrypted_pdf_opens_with_the_right_password(encrypted_pdf):
    page = documents.load(str(encrypted_pdf), password="s3cret")[0]
    assert "INVOICE" in [w.text for w in page.words]


@pytest.mark.parametrize("password, cause", [(None, "encrypted.*--password"), ("nope", "wrong password")])
def test_encrypted_pdf_without_or_with_a_wrong_password(encrypted_pdf, password, cause):
    with pytest.raises(InputError, match=cause) as err:
        documents.load(str(encrypted_pdf), password=password)
    assert err.value.path == str(encrypted_pdf) and str(encrypted_pdf) in str(err.value)


# --- the pixel cap ----------------------------------------------------------------------

def test_pixel_cap_downscales_and_says_so_on_stderr(tmp_path, capsys):
    doc = pymupdf.open()
    page = doc.new_page(width=2384, height=3370)  # A0 poster, points
    page.insert_text((200, 400), "POSTER", fontsize=120)
    doc.save(tmp_path / "poster.pdf")
    cap = 2_000_000
    p = documents.load(str(tmp_path / "poster.pdf"), dpi=150, max_pixels=cap)[0]
    err = capsys.readouterr()
    assert err.out == ""
    assert "poster.pdf" in err.err and "downscaled" in err.err and "page 1" in err.err
    assert p.image.width * p.image.height <= cap * 1.01
    assert p.scale == pytest.approx(p.image.width / 2384)
    assert p.scale < 150 / 72
    # Words stay in points whatever the scale, and still sit on their ink.
    word = next(w for w in p.words if w.text == "POSTER")
    assert word.x0 == pytest.approx(200, abs=2)
    assert _dark_fraction(p, word.box) > 0.1
    # Under the cap nothing is said.
    documents.load(str(write_invoice_pdf(tmp_path / "small.pdf")))
    assert capsys.readouterr().err == ""


# --- bad input --------------------------------------------------------------------------

def _zero_page_pdf() -> bytes:
    """A valid PDF whose page tree is empty (PyMuPDF refuses to save one)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 3\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return out


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buf, format="PNG")
    return buf.getvalue()


BAD_INPUTS = {
    # name: (file name, bytes or None for "do not create", what the message must say)
    "missing": ("nothere.pdf", None, "no such file"),
    "empty": ("empty.pdf", b"", "empty"),
    "truncated_pdf": ("cut.pdf", "half-invoice", "truncated PDF"),
    "corrupt_pdf": ("junk.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 8, "corrupt or truncated PDF"),
    "zero_pages": ("zero.pdf", "zero-pages", "no pages"),
    "text_named_pdf": ("notes.pdf", b"Meeting notes\nnothing to see here\n", "not a PDF or an image"),
    "unknown_image": ("pic.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40, "not a PDF or an image"),
    "broken_png": ("broken.png", "broken-png", "corrupt or truncated PNG image|corrupt or truncated image"),
    "folder": ("a_folder", "mkdir", "folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_the_file_and_the_cause(tmp_path, case):
    name, content, cause = BAD_INPUTS[case]
    path = tmp_path / name
    if content == "half-invoice":
        data = write_invoice_pdf(tmp_path / "whole.pdf").read_bytes()
        content = data[: len(data) // 2]
    elif content == "zero-pages":
        content = _zero_page_pdf()
    elif content == "broken-png":
        content = _png_bytes()[:60]
    if content == "mkdir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=cause) as err:
        documents.load(str(path))
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_bad_bytes_from_stdin_name_stdin():
    with pytest.raises(InputError, match="^<stdin>: the file is empty"):
        documents.load("<stdin>", data=b"")
    with pytest.raises(InputError, match="^<stdin>: no pages|^<stdin>: the document has no pages"):
        documents.load("<stdin>", data=_zero_page_pdf())


def test_page_out_of_range(tmp_path):
    pdf = write_invoice_pdf(tmp_path / "two.pdf", pages=2)
    with pytest.raises(InputError, match=r"page 5 is out of range \(the document has 2 pages\)") as err:
        documents.load(str(pdf), pages=[1, 5])
    assert err.value.path == str(pdf)


def test_dpi_out_of_range_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--dpi"):
        documents.load(str(write_invoice_pdf(tmp_path / "a.pdf")), dpi=5000)


def test_sniff():
    assert documents.sniff(b"%PDF-1.7\n...") == "pdf"
    assert documents.sniff(b"\xef\xbb\xbf%PDF-1.4") == "pdf"  # junk before the header is allowed
    assert documents.sniff(_png_bytes()) == "png"
    assert documents.sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert documents.sniff(b"II*\x00") == "tiff" and documents.sniff(b"MM\x00*") == "tiff"
    assert documents.sniff(b"hello") is None


def test_iter_pages_checks_at_once_and_yields_in_order(tmp_path):
    pdf = write_invoice_pdf(tmp_path / "three.pdf", pages=3)
    with pytest.raises(InputError, match="page 4 is out of range"):
        documents.iter_pages(str(pdf), pages=[1, 4])  # before any page is taken
    it = documents.iter_pages(str(pdf), pages=[3, 1])
    assert [p.number for p in it] == [3, 1]
    with pytest.raises(InputError, match=r"pages 4-9 are out of range \(the document has 3 pages\)"):
        documents.iter_pages(str(pdf), pages=documents.parse_pages("2-9"))
    with pytest.raises(InputError, match=r"pages 5, 8 are out of range"):
        documents.iter_pages(str(pdf), pages=[1, 5, 8])


def test_text_layer_pages_render_only_when_asked(tmp_path):
    from conftest import write_invoice_pdf

    from docvqa_cli.reading import tiles

    pdf = write_invoice_pdf(tmp_path / "three.pdf", pages=3)
    pages = documents.load(str(pdf), dpi=100)
    assert [p.rendered for p in pages] == [False, False, False]
    assert all(p.words for p in pages)
    ts = tiles.split(pages[1], tile_px=256, max_tiles=8)  # tiling needs no pixels
    assert not pages[1].rendered
    crop = ts[0].image  # a kept tile's pixels do
    assert pages[1].rendered and not pages[0].rendered and not pages[2].rendered
    assert pages[1].image.size == pages[1].pixel_size
    assert crop.size[0] > 0 and pages[1].image.getextrema() != ((255, 255),) * 3
