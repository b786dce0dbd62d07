"""Write a copy of the document with each answer's boxes highlighted (``--annotate``).

The copy is a PDF: a PDF stays itself (its pages, text and existing annotations), an image
(PNG, JPEG, a multi-page TIFF) becomes one PDF page per frame, sized so that one image
pixel is one point, which is what the record's boxes use for images. Each answer with
boxes gets one highlight annotation per page, over all its line boxes there, titled
``docq`` and holding the question and the answer, so a person can open the file and see.

The source is untrusted and the copy is meant to be opened: ``scrub`` takes out what a PDF
viewer would run or hand to the system (JavaScript, Launch and other actions that leave the
document, embedded and attached files, the document's open action) and keeps the pages.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable

import pymupdf

from docvqa_cli.errors import InputError, UsageError
from docvqa_cli.reading.documents import _native_size, open_document
from docvqa_cli.records import Answer

HIGHLIGHT = (1.0, 0.85, 0.0)  # yellow
AUTHOR = "docq"


def write(doc_path: str, answers: Iterable[Answer], out_path: str, password: str | None = None,
          data: bytes | None = None) -> int:
    """Write the annotated copy of ``doc_path`` to ``out_path``; return the highlights added.

    ``data`` is the document's bytes when it came from stdin. Answers without boxes (no
    answer, or an error) add nothing. The input file is never overwritten.
    """
    if data is None and os.path.exists(out_path) and os.path.exists(doc_path) \
            and os.path.samefile(doc_path, out_path):
        raise UsageError(f"--annotate: {out_path} is the input document; give another file name")
    src = open_document(doc_path, data=data, password=password)
    try:
        out = _as_pdf(src)
    finally:
        if not src.is_pdf:
            src.close()
    added = 0
    try:
        if out.is_pdf:
            scrub(out)
        for answer in answers:
            by_page: dict[int, list[pymupdf.Rect]] = defaultdict(list)
            for box in answer.boxes or []:
                by_page[int(box["page"])].append(
                    pymupdf.Rect(box["x0"], box["y0"], box["x1"], box["y1"])
                )
            for number, rects in sorted(by_page.items()):
                if not 1 <= number <= out.page_count:
                    continue
                page = out[number - 1]
                if page.rotation:
                    rects = [r * page.derotation_matrix for r in rects]
                annot = page.add_highlight_annot(quads=[r.quad for r in rects])
                annot.set_colors(stroke=HIGHLIGHT)
                annot.set_info(title=AUTHOR, subject=answer.question,
                               content=f"Q: {answer.question}\nA: {answer.answer}")
                annot.update()
                added += 1
        try:
            out.save(out_path, garbage=3, deflate=True)
        except Exception as exc:
            raise InputError(out_path, f"cannot write the annotated PDF ({exc})") from None
    finally:
        out.close()
    return added


def _as_pdf(src: pymupdf.Document) -> pymupdf.Document:
    """The document as a PDF whose points are the points of docq's boxes."""
    if src.is_pdf:
        return src
    out = pymupdf.open()
    for page in src:
        width, height = _native_size(page)  # docq: one pixel is one point
        pix = page.get_pixmap(
            matrix=pymupdf.Matrix(width / page.rect.width, height / page.rect.height),
            alpha=False,
        )
        new = out.new_page(width=width, height=height)
        new.insert_image(new.rect, pixmap=pix)
    return out


# Actions a viewer would run, hand to the system, or use to reach outside the document.
RISKY_ACTIONS = ("/JavaScript", "/Launch", "/SubmitForm", "/ImportData", "/GoToR", "/GoToE", "/URI",
                 "/Rendition", "/Movie", "/Sound", "/RichMediaExecute")


def scrub(doc: pymupdf.Document) -> None:
    """Take the active and embedded content out of ``doc`` (a PDF), keeping its pages."""
    doc.scrub(attached_files=True, embedded_files=True, javascript=True, remove_links=True,
              clean_pages=False, hidden_text=False, metadata=False, redactions=False, reset_fields=False,
              reset_responses=False, thumbnails=False, xml_metadata=False)
    catalog = doc.pdf_catalog()
    for key in ("OpenAction", "AA", "Names/JavaScript", "Names/EmbeddedFiles"):
        if doc.xref_get_key(catalog, key)[0] != "null":
            doc.xref_set_key(catalog, key, "null")
    for xref in range(1, doc.xref_length()):
        if doc.xref_get_key(xref, "S")[1] in RISKY_ACTIONS:  # an action object of its own
            doc.update_object(xref, "<<>>")
            continue
        if doc.xref_get_key(xref, "AA")[0] != "null":  # additional actions (on open, on focus ...)
            doc.xref_set_key(xref, "AA", "null")
        if doc.xref_get_key(xref, "A/S")[1] in RISKY_ACTIONS:  # an annotation's own action
            doc.xref_set_key(xref, "A", "null")
        if doc.xref_get_key(xref, "Type")[1] in ("/EmbeddedFile", "/Filespec"):
            if doc.xref_is_stream(xref):
                doc.update_stream(xref, b"")
            doc.update_object(xref, "<<>>")
