"""How often does grounding put the box on the right line? (issue 5)

Over the dev set (../shared/data/dev): for each known answer string, the best match of
``grounding.find_all`` (what ``docq ground DOC TEXT`` prints first) is right when the
centre of every box it returns lies

- receipts (sroie): inside a true line box of ``box/NNN.csv`` whose transcript prints the
  answer (for names and addresses: a line whose transcript is part of the answer);
- invoices: on the words that print the value, found with PyMuPDF's own ``search_for``
  of the printed form written in ``PRINTED`` below (the JSON values are normalised: ISO
  dates, plain numbers).

It also grounds, on each receipt, the next receipt's total, date and company where this
one does not print them (group "absent"): any match returned there is a false hit.

Receipt words come from ``documents.load`` on the jpg with the default OCR (RapidOCR,
~2-10 s a receipt); they are cached in a pickle in the temp folder for reruns
(``--no-cache`` reads them again).

    python benchmarks/grounding.py [--data ../shared/data/dev] [--no-cache] [-v]
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import pickle
import re
import sys
import tempfile
import time
from difflib import SequenceMatcher
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402

from docvqa_cli import grounding, values  # noqa: E402
from docvqa_cli.grounding import norm_text  # noqa: E402
from docvqa_cli.reading import documents  # noqa: E402

RECEIPT_FIELDS = ("total", "date", "company", "address")
GOALS = {"total": 0.95, "date": 0.95, "company": 0.9}

# How each invoice prints its JSON value (the truth for "the words that print that value").
# None: the value is not printed on the document (QualityHosting's total is not in its text).
PRINTED = {
    "AmazonWebServices": {"amount": "$4.11", "date": "August 3 , 2014", "invoice_number": "42183017"},
    "FlipkartInvoice": {"amount": "319.00", "date": "20-10-2015", "invoice_number": "BLR_WFLD20151000982590"},
    "QualityHosting": {"amount": None, "date": "7. Mai 2014", "invoice_number": "30064443"},
    "oyo": {"amount": "1939", "date": "31/12/2017", "invoice_number": "IBZY2087"},
}
INVOICE_FIELDS = ("amount", "date", "invoice_number")


def receipt_pages(data: Path, use_cache: bool) -> dict[str, list[documents.Page]]:
    cache = Path(tempfile.gettempdir()) / "docq-bench-grounding-ocr.pkl"
    if use_cache and cache.exists():
        with open(cache, "rb") as fh:
            return pickle.load(fh)
    result = {}
    for path in sorted(glob.glob(str(data / "sroie" / "img" / "*.jpg"))):
        t = time.perf_counter()
        pages = documents.load(path)
        for p in pages:
            p._image, p.render = None, None  # grounding needs words and sizes only
        result[Path(path).stem] = pages
        print(f"  OCR {Path(path).name}: {len(pages[0].words)} words, {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
    with open(cache, "wb") as fh:
        pickle.dump(result, fh)
    return result


def true_lines(box_csv: Path, field: str, answer: str) -> list[tuple[float, float, float, float]]:
    key = norm_text(answer)
    lines = []
    with open(box_csv, encoding="utf-8", errors="replace") as fh:
        for row in csv.reader(fh):
            if len(row) < 9:
                continue
            xs = [float(v) for v in row[0:8:2]]
            ys = [float(v) for v in row[1:8:2]]
            raw = " ".join(",".join(row[8:]).lower().split())
            text = norm_text(raw)
            if field in ("total", "date"):
                value = " ".join(answer.lower().split())
                hit = re.search(r"(?<![\d.,])%s(?![\d]|[.,]\d)" % re.escape(value), raw) is not None
                value = value.lstrip("$")  # the key's total may carry a sign the line lacks
                hit = hit or re.search(r"(?<![\d.,])%s(?![\d]|[.,]\d)" % re.escape(value), raw) is not None
            else:
                # A line of the name or address: most of its letters are in the answer, in order,
                # or most of the answer is in it (the transcripts have their own slips, e.g.
                # "SDN BND", "LOP P.T.", and a name line may go on with a company number).
                same = sum(b.size for b in SequenceMatcher(None, text, key, autojunk=False).get_matching_blocks())
                hit = len(text) >= 3 and same >= 0.8 * min(len(text), len(key))
            if hit:
                lines.append((min(xs), min(ys), max(xs), max(ys)))
    return lines


def inside(box, rects, pad=1.0) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(r[0] - pad <= cx <= r[2] + pad and r[1] - pad <= cy <= r[3] + pad for r in rects)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.exists()), ROOT.parent / "shared") / "data" / "dev"))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    data = Path(args.data)

    stats: dict[str, list[int]] = {}
    seconds: list[float] = []

    def record(group, field, ok, detail):
        s = stats.setdefault(f"{group} {field}", [0, 0])
        s[0] += int(ok)
        s[1] += 1
        if args.verbose or not ok:
            print(f"  {'ok  ' if ok else 'MISS'} {group} {field}: {detail}", file=sys.stderr)

    pages_by_id = receipt_pages(data, not args.no_cache)
    for rid, pages in sorted(pages_by_id.items()):
        key = json.loads((data / "sroie" / "key" / f"{rid}.json").read_text())
        for field in RECEIPT_FIELDS:
            answer = key.get(field) or ""
            truth = true_lines(data / "sroie" / "box" / f"{rid}.csv", field, answer)
            if not truth:
                print(f"  skip receipt {rid} {field}: no true line prints {answer!r}", file=sys.stderr)
                continue
            t = time.perf_counter()
            found = grounding.find_all(answer, pages)
            seconds.append(time.perf_counter() - t)
            ok = bool(found) and all(inside(b, truth) for b in found[0].boxes)
            got = " | ".join(w.text for w in found[0].words) if found else None
            record("receipt", field, ok, f"{rid} {answer!r} -> {got!r}"
                   + (f" score {found[0].score}" if found else ""))

    # Answers that are not printed: another receipt's total, date and company. A match
    # returned for one of them is a false hit.
    ids = sorted(pages_by_id)
    for rid, other in zip(ids, ids[1:] + ids[:1]):
        transcript = norm_text((data / "sroie" / "box" / f"{rid}.csv").read_text(errors="replace"))
        key = json.loads((data / "sroie" / "key" / f"{other}.json").read_text())
        for field in ("total", "date", "company"):
            answer = key[field]
            amount = values.parse_amount(answer)
            if norm_text(answer) in transcript or amount and any(
                    values.same_value(amount, v) for w in pages_by_id[rid][0].words
                    for v in [values.parse_amount(w.text)] if v):
                continue  # printed here too
            found = grounding.find_all(answer, pages_by_id[rid])
            got = " | ".join(w.text for w in found[0].words) if found else None
            record("absent", field, not found, f"{rid} {answer!r} (from {other}) -> {got!r}")

    for pdf in sorted((data / "invoices").glob("*.pdf")):
        truth_json = json.loads(pdf.with_suffix(".json").read_text())[0]
        printed = PRINTED.get(pdf.stem, {})
        pages = documents.load(str(pdf))
        doc = pymupdf.open(pdf)
        for field in INVOICE_FIELDS:
            value = truth_json.get(field)
            form = printed.get(field)
            if value is None or form is None:
                print(f"  skip invoice {pdf.stem} {field}: {value!r} is not printed", file=sys.stderr)
                continue
            rects = {p.number: [tuple(r) for r in doc[p.number - 1].search_for(form)] for p in pages}
            answer = str(value)
            t = time.perf_counter()
            found = grounding.find_all(answer, pages)
            seconds.append(time.perf_counter() - t)
            ok = bool(found) and all(inside(b, rects[found[0].page]) for b in found[0].boxes)
            got = " | ".join(w.text for w in found[0].words) if found else None
            record("invoice", field, ok, f"{pdf.stem} {answer!r} (printed {form!r}) -> {got!r}")
        doc.close()

    print("| field | right line (absent: no match) | rate | goal |")
    print("| --- | --- | --- | --- |")
    for name, (ok, n) in stats.items():
        field = name.split()[1]
        goal = GOALS.get(field, 1.0 if name.startswith("invoice") else None) if not name.startswith("absent") else None
        print(f"| {name} | {ok}/{n} | {ok / n:.2f} | {goal if goal is not None else '-'} |")
    seconds.sort()
    print(f"\nfind_all: median {1000 * seconds[len(seconds) // 2]:.0f} ms, "
          f"max {1000 * seconds[-1]:.0f} ms per answer over {len(seconds)} answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
