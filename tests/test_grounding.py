"""Grounding: answers found on real rendered PDFs (and one OCR'd scan), each normalisation."""

from __future__ import annotations

import json
import subprocess
import pymupdf
import pytest

from conftest import write_invoice_pdf
from docvqa_cli import grounding
from docvqa_cli.reading import documents, tiles
from docvqa_cli.vlm.base import ModelBox

LINES = [
    ((72, 72), "ACME Supplies Ltd.", 18),
    ((72, 100), "12 Harbour Road,", 10),
    ((72, 114), "Leeds LS1 4AB", 10),
    ((400, 100), "Invoice No: INV-20417", 10),
    ((400, 116), "Date: 31/12/2017", 10),
    ((400, 132), "Due: Jan 15, 2018", 10),
    ((72, 222), "Printer paper", 10),
    ((420, 222), "11. 80", 10),  # a space inside the number, as OCR leaves it
    ((72, 240), "Toner cartridge", 10),
    ((420, 240), "1.007,50", 10),  # decimal comma, dot thousands
    ((72, 258), "Cable", 10),
    ((420, 258), "19.00", 10),
    ((300, 700), "Total due: EUR 1,157.40", 12),
]


@pytest.fixture(scope="module")
def doc_pages(tmp_path_factory):
    path = write_invoice_pdf(tmp_path_factory.mktemp("g") / "inv.pdf", LINES)
    return documents.load(str(path)), path


def _rect_of(path, page_no, text):
    with pymupdf.open(path) as doc:
        rects = doc[page_no - 1].search_for(text)
    assert rects, text
    return rects


def _centre_in(box, rect, pad=1.0):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect.x0 - pad <= cx <= rect.x1 + pad and rect.y0 - pad <= cy <= rect.y1 + pad


def _best(text, pages):
    found = grounding.find_all(text, pages)
    assert found, text
    return found[0]


# --- the normalisations, one by one --------------------------------------------------------

def test_parsers_are_the_values_module():
    # one parser per kind: grounding reads amounts and dates with docvqa_cli.values
    assert not hasattr(grounding, "parse_amount") and not hasattr(grounding, "parse_date")
    assert not hasattr(grounding, "to_page_box")


def test_case_and_punctuation(doc_pages):
    pages, path = doc_pages
    m = _best("acme supplies ltd", pages)
    assert m.page == 1 and m.score >= 0.95
    assert _centre_in(m.boxes[0], _rect_of(path, 1, "ACME Supplies Ltd.")[0])


def test_spaces_inside_numbers(doc_pages):
    pages, path = doc_pages
    m = _best("11.80", pages)
    assert len(m.boxes) == 1
    r = _rect_of(path, 1, "11. 80")[0]
    # The box covers both pieces "11." and "80".
    assert m.boxes[0][0] <= r.x0 + 1 and m.boxes[0][2] >= r.x1 - 1


def test_thousands_and_decimal_comma(doc_pages):
    pages, path = doc_pages
    m = _best("1,007.50", pages)
    assert m.score >= 0.9
    assert _centre_in(m.boxes[0], _rect_of(path, 1, "1.007,50")[0])


def test_currency_and_plain_number(doc_pages):
    pages, path = doc_pages
    for answer in ("1157.4", "€1,157.40", "EUR 1157.40"):
        m = _best(answer, pages)
        assert _centre_in(m.boxes[0], _rect_of(path, 1, "1,157.40")[0]), answer


def test_number_is_not_found_inside_another(doc_pages):
    pages, _ = doc_pages
    assert grounding.find_all("9.00", pages) == []  # "19.00" does not print 9.00
    assert grounding.find_all("1,157.41", pages) == []


def test_amount_with_cents_needs_a_fraction_or_a_currency(tmp_path):
    lines = [((72, 72), "JALAN SAGU 18, TAMAN DAYA", 10), ((72, 100), "Room Rs 1939", 10)]
    pages = documents.load(str(write_invoice_pdf(tmp_path / "c.pdf", lines)))
    assert grounding.find_all("18.00", pages) == []  # a street number is not 18.00
    assert _best("1939.00", pages).boxes  # "Rs 1939" is money
    assert _best("1939.0", pages).boxes


def test_dates_written_another_way(doc_pages):
    pages, path = doc_pages
    m = _best("2017-12-31", pages)
    assert _centre_in(m.boxes[0], _rect_of(path, 1, "31/12/2017")[0])
    m = _best("15/01/2018", pages)
    assert _centre_in(m.boxes[0], _rect_of(path, 1, "Jan 15, 2018")[0])
    assert grounding.find_all("2017-12-30", pages) == []


def test_answer_running_over_lines_gets_one_box_per_line(doc_pages):
    pages, path = doc_pages
    m = _best("12 Harbour Road, Leeds LS1 4AB", pages)
    assert len(m.boxes) == 2
    assert _centre_in(m.boxes[0], _rect_of(path, 1, "12 Harbour Road,")[0])
    assert _centre_in(m.boxes[1], _rect_of(path, 1, "Leeds LS1 4AB")[0])


def test_ocr_slip_tolerated_in_long_answers_only(tmp_path):
    path = write_invoice_pdf(tmp_path / "r.pdf", [((72, 72), "BOOK TA .K(TAMAN DAYA) SDN BND", 12),
                                                  ((72, 100), "TEL 5", 10)])
    pages = documents.load(str(path))
    m = _best("BOOK TA .K (TAMAN DAYA) SDN BHD", pages)
    assert 0.75 <= m.score < 1.0
    assert grounding.find_all("TEL 6", pages) == []  # short answers must match exactly


# --- preferences: kept tiles, model boxes ------------------------------------------------

def test_locate_prefers_kept_tiles_then_their_page(tmp_path):
    lines = [((72, 72), "Subtotal 42.00", 10), ((400, 760), "Total 42.00", 10)]
    path = write_invoice_pdf(tmp_path / "two.pdf", lines, pages=2)
    pages = documents.load(str(path), dpi=100)
    page2_tiles = tiles.split(pages[1], tile_px=256, max_tiles=12)
    bottom = [t for t in page2_tiles if any(w.text == "Total" for w in t.words)]
    assert bottom
    m = grounding.locate("42.00", pages, kept=bottom)
    assert m.page == 2 and m.boxes[0][1] > 700
    # Without tiles: page 1 first (document order breaks the tie).
    assert grounding.locate("42.00", pages).page == 1
    # A kept tile on page 2 that does not hold the value still prefers page 2.
    top2 = [t for t in page2_tiles if t.index == 0]
    assert grounding.locate("42.00", pages, kept=top2).page == 2


def test_model_box_chooses_between_spans_but_never_alone(tmp_path):
    lines = [((72, 72), "Subtotal 42.00", 10), ((400, 760), "Total 42.00", 10)]
    path = write_invoice_pdf(tmp_path / "one.pdf", lines)
    pages = documents.load(str(path))
    near_total = ModelBox(page=1, x0=380, y0=740, x1=595, y1=780)
    m = grounding.locate("42.00", pages, model_boxes=[near_total])
    assert m.boxes[0][1] > 700
    assert grounding.locate("43.00", pages, model_boxes=[near_total]) is None


def test_answer_only_partly_printed_gets_no_box(doc_pages):
    pages, _ = doc_pages
    # the value is printed, the sentence around it is not: no box on the part that is
    assert grounding.locate("It comes to 1,157.40 in all.", pages) is None
    assert grounding.locate("It was issued on 31 December 2017", pages) is None
    assert grounding.locate("Either 11.80 or 19.00", pages) is None
    assert grounding.locate("ACME Supplies Ltd, Leeds LS1 4AB, Yorkshire", pages) is None
