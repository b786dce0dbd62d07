"""Real hostile documents for the tests, written byte by byte (fast, no helper library).

Run ``python tests/make_hostile.py DIR`` to write them into DIR for a probe by hand:

- ``many_pages.pdf``: 2,000 small text pages (the total on page 1,500 only).
- ``many_frames.tif``: a 500-frame TIFF.
- ``active_content.pdf``: an invoice that runs JavaScript on open, has a Launch link and an
  annotation with additional actions, and carries an embedded and an attached file.
- ``nested_forms.pdf``: a few KB of form XObjects that each draw the next one many times;
  MuPDF's interpreter walks 2^k paths and never finishes in practice.
- ``slow_render.pdf``: a text layer that reads at once over 10,000 page-sized fills that
  take minutes to render.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (object 1 is the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def many_pages_pdf(path: Path, pages: int = 2000, special: int = 1500,
                   size: tuple[int, int] = (144, 72)) -> Path:
    """``pages`` small pages of text: filler on each, "Total due: EUR 1,157.40" on ``special``."""
    filler = b"BT /F1 9 Tf 6 40 Td (Delivery note, item list) Tj 0 -14 Td (Reference 20417) Tj ET"
    total = b"BT /F1 9 Tf 6 40 Td (Total due: EUR 1,157.40) Tj 0 -14 Td (Invoice INV-20417) Tj ET"
    first_page = 6
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count %d /Kids [%s] >>" % (pages, kids),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        _stream(filler),
        _stream(total),
    ]
    for n in range(1, pages + 1):
        content = 5 if n == special else 4
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (size[0], size[1], content))
    path.write_bytes(_pdf(objects))
    return path


def many_frames_tiff(path: Path, frames: int = 500, size: tuple[int, int] = (160, 60)) -> Path:
    """A multi-frame TIFF, each frame a small white page with a line of text."""
    from PIL import Image, ImageDraw

    def frame(n: int) -> Image.Image:
        im = Image.new("L", size, 255)
        ImageDraw.Draw(im).text((6, 20), f"Total {n}.50", fill=0)
        return im

    first = frame(1)
    first.save(path, save_all=True, append_images=(frame(n) for n in range(2, frames + 1)), compression="raw")
    return path


def nested_forms_pdf(path: Path, depth: int = 28, fanout: int = 2) -> Path:
    """One page whose content draws form X0, which draws X1 ``fanout`` times, and so on to
    ``depth``: fanout^depth form invocations (2^28, about 270 million) from a few KB."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources << /XObject << /X 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        _stream(b"q /X Do Q"),
    ]
    for level in range(depth):
        number = 5 + level
        if level + 1 < depth:
            body = b" ".join([b"q 1 0 0 1 0.01 0 cm /X Do Q"] * fanout)
            res = b"/Resources << /XObject << /X %d 0 R >> >> " % (number + 1)
        else:
            body, res = b"0 0 1 1 re f", b""
        objects.append(_stream(body, b"/Type /XObject /Subtype /Form /BBox [0 0 200 200] " + res))
    path.write_bytes(_pdf(objects))
    return path


def slow_render_pdf(path: Path, fills: int = 100, calls: int = 100) -> Path:
    """An invoice line on a page that also draws form H ``calls`` times, H being ``fills``
    page-sized filled rectangles: its text layer reads in a blink (text extraction skips the
    fills), but rendering paints 10,000 full pages of pixels (minutes at 150 dpi), from 4 KB."""
    form = b" ".join(b"%g g 0 0 595 842 re f" % ((i % 10) / 10) for i in range(fills))
    content = b" ".join([b"q /H Do Q"] * calls) + b" 0 g BT /F1 12 Tf 300 142 Td (Total due: EUR 1,157.40) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /H 5 0 R >> "
        b"/Font << /F1 6 0 R >> >> /Contents 4 0 R >>",
        _stream(content),
        _stream(form, b"/Type /XObject /Subtype /Form /BBox [0 0 595 842] "),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    path.write_bytes(_pdf(objects))
    return path


def active_content_pdf(path: Path) -> Path:
    """A real invoice page (text layer) with the active and embedded content a hostile PDF carries."""
    import pymupdf

    from conftest import write_invoice_pdf

    write_invoice_pdf(path.with_suffix(".plain.pdf"))
    doc = pymupdf.open(path.with_suffix(".plain.pdf"))
    page = doc[0]
    doc.embfile_add("payload.exe", b"MZ not really a program", filename="payload.exe")
    page.add_file_annot((20, 20), b"#!/bin/sh\necho attached\n", "attached.sh")
    page.insert_link({"kind": pymupdf.LINK_LAUNCH, "from": pymupdf.Rect(72, 300, 200, 320), "file": "calc.exe"})
    js = doc.get_new_xref()
    doc.update_object(js, "<< /S /JavaScript /JS (app.alert\\(1\\);) >>")
    doc.xref_set_key(doc.pdf_catalog(), "OpenAction", f"{js} 0 R")
    note = page.add_text_annot((300, 300), "note")
    doc.xref_set_key(note.xref, "AA", "<< /E << /S /Launch /F (cmd.exe) >> >>")
    doc.save(path)
    doc.close()
    path.with_suffix(".plain.pdf").unlink()
    return path


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    for made in (many_pages_pdf(folder / "many_pages.pdf"), many_frames_tiff(folder / "many_frames.tif"),
                 nested_forms_pdf(folder / "nested_forms.pdf"), slow_render_pdf(folder / "slow_render.pdf"),
                 active_content_pdf(folder / "active_content.pdf")):
        print(made, made.stat().st_size, "bytes")
