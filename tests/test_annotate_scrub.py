"""Annotated copies of hostile PDFs keep none of their active or embedded content."""

from __future__ import annotations

import re

import pymupdf

from docvqa_cli import annotate, grounding, records
from docvqa_cli.reading import documents
from make_hostile import active_content_pdf

# A key or name of active or embedded content, unless it is set to null (PDF for "absent").
ACTIVE = re.compile(r"/(JavaScript|Launch|EmbeddedFiles?|OpenAction|AA)(?![A-Za-z])(?!\s*null)")


def active_parts(path) -> list[str]:
    """The active or embedded pieces left in a PDF, by object."""
    found = []
    with pymupdf.open(path) as doc:
        if doc.embfile_count():
            found.append(f"{doc.embfile_count()} embedded file(s)")
        for xref in range(1, doc.xref_length()):
            text = doc.xref_object(xref, compressed=True)
            found += [f"{xref}: {m.group(0)}" for m in ACTIVE.finditer(text)]
            if doc.xref_is_stream(xref) and b"MZ not really" in (doc.xref_stream(xref) or b""):
                found.append(f"{xref}: the embedded program's bytes")
        for page in doc:
            found += [f"link {link['kind']}" for link in page.get_links() if link["kind"] == pymupdf.LINK_LAUNCH]
            for annot in page.annots():
                if annot.type[0] == pymupdf.PDF_ANNOT_FILE_ATTACHMENT and annot.get_file() != b" ":
                    found.append("an attached file")
    return found


def test_the_copy_of_a_hostile_pdf_is_scrubbed_and_still_highlighted(tmp_path):
    src = active_content_pdf(tmp_path / "hostile.pdf")
    before = src.read_bytes()
    assert len(active_parts(src)) >= 5  # the source really carries them: JS, Launch x2, files
    pages = documents.load(str(src), ocr=None)
    match = grounding.locate("1,007.50", pages)
    answer = records.Answer(doc=str(src), question_id="q1", question="Toner?", answer="1,007.50",
                            page=match.page, boxes=records.boxes_of(match))
    out = tmp_path / "copy.pdf"
    assert annotate.write(str(src), [answer], str(out)) == 1
    assert active_parts(out) == []
    with pymupdf.open(out) as doc:
        assert [a.info["title"] for a in doc[0].annots() if a.type[0] == pymupdf.PDF_ANNOT_HIGHLIGHT] == ["docq"]
        assert "Total due: EUR 1,157.40" in doc[0].get_text()  # the page itself is kept
    assert src.read_bytes() == before  # the source is untouched
