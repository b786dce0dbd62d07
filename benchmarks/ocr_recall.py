"""Do docq's words hold the answer? OCR recall on receipts, text-layer recall on invoices.

    python benchmarks/ocr_recall.py [--engines rapidocr,tesseract] [--data DIR] [--tesseract-psm N]

Receipts (DIR/sroie): each scan goes through ``documents.load`` with each OCR engine; a
receipt counts when its words contain the total of ``key/NNN.json``:
- strict: one OCR word holds the total as printed (digit-bounded, so "RM9.00" holds "9.00"
  but "19.00" does not);
- lenient: also when the words of one line, joined without spaces, hold it ("11. 80" ->
  "11.80"), or when it matches with thousands separators removed on both sides.
Invoices (DIR/invoices): each born-digital PDF's text-layer words (``documents.load``, no
OCR) must hold the ``amount`` in one of the ways an invoice prints it (4.11; 1,939.00;
1939; 34,73 with a decimal comma); an invoice counts only if its raw text layer has it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docvqa_cli.reading import documents, ocr  # noqa: E402
from docvqa_cli.reading.ocr import tesseract  # noqa: E402

DEFAULT_DATA = (ROOT.parent / "shared" / "data" / "dev").resolve()


def bounded(needle: str) -> re.Pattern:
    """``needle`` not glued to further digits (a separator followed by a digit counts as glued)."""
    return re.compile(r"(?<![\d])(?<![\d][.,])" + re.escape(needle) + r"(?![\d])(?![.,]\d)")


def strict_hit(total: str, words) -> bool:
    pat = bounded(total)
    return any(pat.search(w.text) for w in words)


def lenient_hit(total: str, words) -> bool:
    if strict_hit(total, words):
        return True
    plain = total.replace(",", "")
    lines: dict[int, list] = {}
    for w in words:
        lines.setdefault(w.line, []).append(w)
    texts = ["".join(w.text for w in sorted(ws, key=lambda w: w.x0)) for ws in lines.values()]
    texts += [w.text for w in words]
    return any(bounded(total).search(t) or bounded(plain).search(t.replace(",", "")) for t in texts)


def amount_forms(amount: float) -> list[str]:
    """How an invoice may print ``amount``: with or without cents and thousands separators."""
    forms = set()
    for text in (f"{amount:,.2f}", f"{amount:.2f}"):
        forms.add(text)
        # Decimal comma, dot (or none) for thousands: 1.939,00 / 34,73.
        forms.add(text.replace(",", "\0").replace(".", ",").replace("\0", "."))
    if amount == int(amount):
        forms.update({f"{int(amount):,}", str(int(amount))})
    return sorted(forms)


def receipts(data: Path, engines: list[str]) -> dict:
    keys = sorted(glob.glob(str(data / "sroie" / "key" / "*.json")))
    results = {}
    for engine in engines:
        strict = lenient = 0
        missed = []
        seconds = 0.0
        # Load the engine once outside the timing (RapidOCR's first call loads its models).
        first = str(data / "sroie" / "img" / (Path(keys[0]).stem + ".jpg"))
        documents.load(first, ocr=engine)
        for key in keys:
            total = json.load(open(key))["total"].strip()
            total = re.sub(r"^[^\d]+|[^\d]+$", "", total)  # "$8.70" -> "8.70"
            img = str(data / "sroie" / "img" / (Path(key).stem + ".jpg"))
            t0 = time.perf_counter()
            page = documents.load(img, ocr=engine)[0]
            seconds += time.perf_counter() - t0
            s, l = strict_hit(total, page.words), lenient_hit(total, page.words)
            strict += s
            lenient += l
            if not s:
                near = [w.text for w in page.words if total.split(".")[0] in w.text][:4]
                missed.append(f"{Path(key).stem}: {total} (lenient {'yes' if l else 'no'}; words like {near})")
        n = len(keys)
        results[engine] = {"receipts": n, "strict": strict, "lenient": lenient,
                           "seconds_per_page": seconds / n, "missed_strict": missed}
        print(f"sroie {engine:10s} strict {strict}/{n}  lenient {lenient}/{n}  "
              f"{seconds / n:.2f} s/page", flush=True)
        for m in missed:
            print(f"    missed {m}")
    return results


def invoices(data: Path) -> dict:
    import pymupdf

    rows = []
    for js in sorted(glob.glob(str(data / "invoices" / "*.json"))):
        amount = float(json.load(open(js))[0]["amount"])
        pdf = js[:-5] + ".pdf"
        forms = amount_forms(amount)
        with pymupdf.open(pdf) as doc:
            raw = " ".join(p.get_text() for p in doc)
        in_layer = [f for f in forms if bounded(f).search(raw)]
        pages = documents.load(pdf, ocr=None)
        words = [w for p in pages for w in p.words]
        found = [f for f in forms if strict_hit(f, words)]
        rows.append({"invoice": Path(pdf).name, "amount": amount, "in_text_layer": in_layer,
                     "in_words": found, "sources": sorted({p.source for p in pages})})
        print(f"invoice {Path(pdf).name:24s} amount {amount:<8} text layer has {in_layer or 'none'}; "
              f"docq words have {found or 'none'} ({', '.join(sorted({p.source for p in pages}))})")
    has = [r for r in rows if r["in_text_layer"]]
    ok = [r for r in has if r["in_words"]]
    print(f"invoices: words hold the amount in {len(ok)} of the {len(has)} whose text layer has it "
          f"({len(rows)} invoices)")
    return {"invoices": rows, "with_amount_in_layer": len(has), "found": len(ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ocr.ENGINES))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tesseract-psm", type=int, default=None,
                    help="override tesseract's page segmentation mode (to compare modes)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.tesseract_psm is not None:
        tesseract.TESSERACT_PSM = args.tesseract_psm
    print(f"docq OCR recall; {os.cpu_count()} CPUs; tesseract psm {tesseract.TESSERACT_PSM}", flush=True)
    out = {"invoices": invoices(args.data)}
    engines = [e for e in args.engines.split(",") if e]
    out["sroie"] = receipts(args.data, engines)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
