"""Annotated copies: highlight annotations on the answer's words, read back with PyMuPDF."""

from __future__ import annotations

import pymupdf
import pytest

from conftest import write_invoice_pdf
from docvqa_cli import annotate, grounding, records
from docvqa_cli.errors import UsageError
from docvqa_cli.reading import documents
from docvqa_cli.records import Answer

ADDRESS = "12 Harbour Road, Leeds LS1 4AB"


def _grounded(path, question, answer, pages) -> Answer:
    m = grounding.locate(answer, pages)
    assert m is not None, answer
    return Answer(doc=str(path), question_id=question[:8], question=question, answer=answer,
                  page=m.page, boxes=records.boxes_of(m))


def _iou(a: pymupdf.Rect, b: pymupdf.Rect) -> float:
    inter = pymupdf.Rect(a) & b
    if inter.is_empty:
        return 0.0
    return inter.get_area() / (a.get_area() + b.get_area() - inter.get_area())


def test_pdf_highlights_sit_on_the_answer_words(tmp_path, invoice_pdf):
    pages = documents.load(str(invoice_pdf))
    answers = [
        _grounded(invoice_pdf, "What is the toner price?", "1,007.50", pages),
        _grounded(invoice_pdf, "What is the invoice date?", "2024-03-14", pages),
        Answer(doc=str(invoice_pdf), question_id="none", question="Who signed?", answer="",
               error="no answer"),
    ]
    out = tmp_path / "annotated.pdf"
    assert annotate.write(str(invoice_pdf), answers, str(out)) == 2
    with pymupdf.open(out) as doc:
        page = doc[0]
        annots = list(page.annots())
        assert len(annots) == 2
        assert all(a.type[0] == pymupdf.PDF_ANNOT_HIGHLIGHT for a in annots)
        by_content = {a.info["content"]: a for a in annots}
        toner = by_content["Q: What is the toner price?\nA: 1,007.50"]
        assert toner.info["title"] == "docq"
        assert _iou(toner.rect, page.search_for("1,007.50")[0]) > 0.6
        date = by_content["Q: What is the invoice date?\nA: 2024-03-14"]
        assert _iou(date.rect, page.search_for("14 March 2024")[0]) > 0.6
        # The text of the document is still there.
        assert "ACME Supplies Ltd" in page.get_text()


def test_answer_over_two_lines_is_one_highlight_with_two_quads(tmp_path):
    lines = [((72, 100), "12 Harbour Road,", 10), ((72, 114), "Leeds LS1 4AB", 10)]
    path = write_invoice_pdf(tmp_path / "addr.pdf", lines)
    pages = documents.load(str(path))
    a = _grounded(path, "Where is it?", ADDRESS, pages)
    assert len(a.boxes) == 2
    out = tmp_path / "addr-annotated.pdf"
    annotate.write(str(path), [a], str(out))
    with pymupdf.open(out) as doc:
        page = doc[0]
        (annot,) = list(page.annots())
        assert len(annot.vertices) == 8  # two quads
        both = page.search_for("12 Harbour Road,")[0] | page.search_for("Leeds LS1 4AB")[0]
        assert _iou(annot.rect, both) > 0.6


def test_image_becomes_pdf_page_with_pixel_points(tmp_path, scan_png):
    pages = documents.load(str(scan_png))
    a = _grounded(scan_png, "What is due?", "1,157.40", pages)
    out = tmp_path / "scan-annotated.pdf"
    assert annotate.write(str(scan_png), [a], str(out)) == 1
    with pymupdf.open(out) as doc:
        page = doc[0]
        assert (page.rect.width, page.rect.height) == (pages[0].width, pages[0].height)
        (annot,) = list(page.annots())
        b = a.boxes[0]
        box = pymupdf.Rect(b["x0"], b["y0"], b["x1"], b["y1"])
        assert annot.rect.contains(box) and _iou(annot.rect, box) > 0.6
        assert page.get_images()  # the scan is on the page


def test_refuses_to_overwrite_the_input(invoice_pdf):
    with pytest.raises(UsageError, match="input document"):
        annotate.write(str(invoice_pdf), [], str(invoice_pdf))
