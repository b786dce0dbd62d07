"""Write the sample documents of this folder: invoice.pdf, receipt.png and contract.pdf.

    python sample_docs/make_samples.py [OUT_DIR]

Deterministic: text is drawn with PyMuPDF's built-in fonts (no system fonts needed) and
the receipt's noise comes from a seeded generator, so the same PyMuPDF and Pillow give the
same files. The questions and answers each file holds are in README.md beside this script;
tests read these files and check those answers against what docq reads.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image, ImageFilter

HERE = Path(__file__).resolve().parent
A4 = (595, 842)  # points

# --- invoice.pdf: a born-digital invoice with a text layer ---------------------------------

INVOICE_ITEMS = [
    # description, quantity, unit price, line total
    ("Laser printer paper A4, box of 5 reams", 12, "24.50", "294.00"),
    ("Toner cartridge TN-2420, black", 4, "68.90", "275.60"),
    ("Ergonomic office chair, model K2", 2, "329.00", "658.00"),
    ("Desk lamp LED, warm white", 6, "21.75", "130.50"),
]
INVOICE_SUBTOTAL = "1,358.10"
INVOICE_TAX = "271.62"  # 20 % VAT
INVOICE_TOTAL = "1,629.72"


def make_invoice(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    t = page.insert_text
    # Seller (top left) and the invoice's own data (top right).
    t((56, 70), "Northwind Office Supplies Ltd", fontsize=16, fontname="hebo")
    t((56, 88), "41 Canal Street, Manchester M1 3HE", fontsize=9, fontname="helv")
    t((56, 100), "VAT reg. GB 284 6613 09", fontsize=9, fontname="helv")
    t((400, 70), "INVOICE", fontsize=20, fontname="hebo")
    t((400, 92), "Invoice No: NW-2024-0173", fontsize=10, fontname="helv")
    t((400, 106), "Date: 18 March 2024", fontsize=10, fontname="helv")
    t((400, 120), "Due date: 17 April 2024", fontsize=10, fontname="helv")
    # Buyer.
    t((56, 160), "Bill to:", fontsize=10, fontname="hebo")
    t((56, 174), "Harbour Dental Clinic", fontsize=10, fontname="helv")
    t((56, 186), "7 Quay Parade, Bristol BS1 4DJ", fontsize=10, fontname="helv")
    # Line items.
    y = 240
    page.draw_line((56, y - 14), (539, y - 14), color=(0, 0, 0), width=0.8)
    for x, head in ((56, "Description"), (340, "Qty"), (400, "Unit price"), (480, "Amount")):
        t((x, y - 2), head, fontsize=10, fontname="hebo")
    page.draw_line((56, y + 4), (539, y + 4), color=(0, 0, 0), width=0.5)
    y += 22
    for desc, qty, unit, amount in INVOICE_ITEMS:
        t((56, y), desc, fontsize=10, fontname="helv")
        t((340, y), str(qty), fontsize=10, fontname="helv")
        t((400, y), unit, fontsize=10, fontname="helv")
        t((480, y), amount, fontsize=10, fontname="helv")
        y += 18
    page.draw_line((340, y - 6), (539, y - 6), color=(0, 0, 0), width=0.5)
    y += 10
    for label, value, font in (
        ("Subtotal", INVOICE_SUBTOTAL, "helv"),
        ("VAT 20%", INVOICE_TAX, "helv"),
        ("Total due (GBP)", INVOICE_TOTAL, "hebo"),
    ):
        t((340, y), label, fontsize=10, fontname=font)
        t((480, y), value, fontsize=10, fontname=font)
        y += 18
    t((56, 760), "Payment by bank transfer to IBAN GB29 NWBK 6016 1331 9268 19 within 30 days.",
      fontsize=8, fontname="helv")
    t((56, 772), "Thank you for your business.", fontsize=8, fontname="helv")
    doc.set_metadata({"title": "Invoice NW-2024-0173", "creationDate": "D:20240318000000",
                      "modDate": "D:20240318000000"})
    doc.save(path, garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return path


# --- receipt.png: a scanned-looking shop receipt, no text layer -----------------------------

RECEIPT_LINES = [
    ("GREENLEAF GROCERY", 13, "cobo", "center"),
    ("128 Market Lane, Oxford OX1 2HS", 8, "cour", "center"),
    ("Tel 01865 240 117", 8, "cour", "center"),
    ("", 6, "cour", "left"),
    ("Date: 02/05/2024    Time: 17:42", 8, "cour", "left"),
    ("Receipt: 004817     Till: 3", 8, "cour", "left"),
    ("--------------------------------", 8, "cour", "left"),
    ("Bananas 1kg                 1.15", 8, "cour", "left"),
    ("Whole milk 2L               1.65", 8, "cour", "left"),
    ("Sourdough loaf              3.20", 8, "cour", "left"),
    ("Free range eggs x12         3.85", 8, "cour", "left"),
    ("Cheddar 400g                4.30", 8, "cour", "left"),
    ("Coffee beans 500g           7.95", 8, "cour", "left"),
    ("--------------------------------", 8, "cour", "left"),
    ("TOTAL                      22.10", 9, "cobo", "left"),
    ("CARD                       22.10", 8, "cour", "left"),
    ("CHANGE                      0.00", 8, "cour", "left"),
    ("", 6, "cour", "left"),
    ("Thank you, see you soon!", 8, "cour", "center"),
]
RECEIPT_TOTAL = "22.10"


def make_receipt(path: Path, dpi: int = 150, angle: float = 2.0, seed: int = 7) -> Path:
    width = 220  # points: a till roll
    height = 30 + 14 * len(RECEIPT_LINES)
    doc = pymupdf.open()
    page = doc.new_page(width=width, height=height)
    y = 26
    for text, size, font, align in RECEIPT_LINES:
        if text:
            length = pymupdf.get_text_length(text, fontname=font, fontsize=size)
            x = (width - length) / 2 if align == "center" else 14
            page.insert_text((x, y), text, fontsize=size, fontname=font)
        y += size + 5
    pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY, alpha=False)
    doc.close()
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    # Paper and ink are never pure white and black; the scan is a little blurred, rotated
    # and noisy.
    img = img.point(lambda v: 40 + v * (236 - 40) // 255)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    pad = 24
    canvas = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), 236)
    canvas.paste(img, (pad, pad))
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=236)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(canvas, dtype=np.int16) + rng.normal(0, 9, (canvas.height, canvas.width)).round()
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    canvas.save(path, format="PNG", optimize=True)
    return path


# --- contract.pdf: a multi-page service agreement ------------------------------------------

CONTRACT_PAGES = [
    ("SERVICE AGREEMENT", [
        "This Service Agreement (the \"Agreement\") is made on 3 June 2024 (the \"Effective",
        "Date\") between:",
        "",
        "(1) Bluefield Analytics GmbH, Torstrasse 112, 10119 Berlin, Germany (the \"Provider\");",
        "and",
        "(2) Marlow & Finch Retail plc, 9 Eastcheap, London EC3M 1BN, United Kingdom",
        "(the \"Client\").",
        "",
        "The Provider and the Client are each a \"Party\" and together the \"Parties\".",
        "",
        "1. Background",
        "1.1 The Client wishes to have its sales data analysed each month, and the Provider",
        "has the staff and systems to do so.",
        "1.2 The Parties agree to the terms below.",
    ]),
    ("2. Services", [
        "2.1 The Provider shall deliver a monthly sales report within ten (10) working days",
        "of the end of each calendar month.",
        "2.2 The Provider shall keep the Client's data in data centres inside the European",
        "Union and shall not pass it to any third party without written consent.",
        "2.3 Each report shall include store-level revenue, basket size and a forecast for",
        "the following quarter.",
        "",
        "3. Term",
        "3.1 This Agreement starts on the Effective Date and runs for an initial term of",
        "twenty-four (24) months, ending on 2 June 2026.",
        "3.2 It renews for further periods of twelve (12) months unless either Party gives",
        "ninety (90) days' written notice before the end of the current term.",
    ]),
    ("4. Fees and payment", [
        "4.1 The Client shall pay the Provider a fixed fee of EUR 4,750.00 per month,",
        "excluding VAT.",
        "4.2 The Provider shall invoice on the first working day of each month. Invoices are",
        "payable within thirty (30) days of the invoice date.",
        "4.3 Late payments bear interest at 4% per year above the base rate of the",
        "European Central Bank.",
        "4.4 A one-off set-up fee of EUR 12,400.00 is payable on signature.",
        "",
        "5. Confidentiality",
        "5.1 Each Party shall keep confidential all information received from the other",
        "Party and use it only for the purposes of this Agreement.",
    ]),
    ("6. Liability", [
        "6.1 The total liability of the Provider under this Agreement in any contract year",
        "is limited to the fees paid by the Client in that year.",
        "6.2 Neither Party is liable for indirect or consequential loss.",
        "",
        "7. Termination",
        "7.1 Either Party may terminate this Agreement with immediate effect by written",
        "notice if the other Party commits a material breach and does not remedy it",
        "within thirty (30) days of being asked to do so.",
        "",
        "8. Governing law",
        "8.1 This Agreement is governed by the laws of England and Wales.",
    ]),
    ("Signatures", [
        "Signed for and on behalf of Bluefield Analytics GmbH:",
        "",
        "Name: Katrin Vogel          Title: Managing Director",
        "Date: 3 June 2024",
        "",
        "Signed for and on behalf of Marlow & Finch Retail plc:",
        "",
        "Name: Daniel Okafor         Title: Chief Operating Officer",
        "Date: 5 June 2024",
    ]),
]


def make_contract(path: Path) -> Path:
    doc = pymupdf.open()
    total = len(CONTRACT_PAGES)
    for n, (heading, lines) in enumerate(CONTRACT_PAGES, start=1):
        page = doc.new_page(width=A4[0], height=A4[1])
        page.insert_text((72, 90), heading, fontsize=15 if n == 1 else 13, fontname="tibo")
        y = 126
        for line in lines:
            if line:
                bold = re.match(r"\d+\. ", line) is not None  # a section heading
                page.insert_text((72, y), line, fontsize=11, fontname="tibo" if bold else "tiro")
            y += 17
        page.insert_text((72, 800), "Service Agreement: Bluefield Analytics GmbH / Marlow & Finch Retail plc",
                         fontsize=8, fontname="tiro")
        page.insert_text((480, 800), f"Page {n} of {total}", fontsize=8, fontname="tiro")
    doc.set_metadata({"title": "Service Agreement", "creationDate": "D:20240603000000",
                      "modDate": "D:20240603000000"})
    doc.save(path, garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    out.mkdir(parents=True, exist_ok=True)
    for made in (make_invoice(out / "invoice.pdf"), make_receipt(out / "receipt.png"),
                 make_contract(out / "contract.pdf")):
        print(f"{made} ({made.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
