"""Write a copy of the document with each answer's boxes highlighted (``--annotate``).

The copy is a PDF: a PDF stays itself (its pages, text and existing annotations), an image
(PNG, JPEG, a multi-page TIFF) becomes one PDF page per frame, sized so that one image
pixel is one point, which is what the record's boxes use for images. Each answer with
boxes gets one highlight annotation per page, over all its line boxes there, titled
``docq`` and holding the question and the answer, so a person can open the file and see.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable

import pymupdf

from docvqa_cli.documents import _native_size, open_document
from docvqa_cli.errors import InputError, UsageError
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
