"""Recall of text-guided tile selection on the dev set, beside random and centre baselines.

For each dev receipt (company, date, address, total) and each dev invoice (amount, date,
invoice number, where the value is printed), and for the questions of the sample contract
(``sample_docs/contract.pdf``, reported apart: the dev set has no contract), the answer region is the box of the words
that hold the answer: receipts, the ``box/NNN.csv`` line(s) of the answer; invoices, the
words of the page that spell the value. Recall is the share of questions whose whole
answer region lies in the kept tiles (each of its boxes covered by the union of kept
tiles). A value printed in several places (a total repeated under "cash") counts when one
of its places is wholly kept; a value that runs over several lines (an address) needs all
its lines.

    python benchmarks/selection.py [--data ../shared/data/dev] [--semantic] [--seeds 50]

OCR of the receipts (RapidOCR, the default engine) is cached in a pickle in the temp
folder, so only the first run pays for it; the timings exclude OCR.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import math
import pickle
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docvqa_cli import relevance, values  # noqa: E402
from docvqa_cli.reading import documents, tiles as tiles_mod  # noqa: E402
from docvqa_cli.relevance import pagetext  # noqa: E402

RECEIPT_QUESTIONS = {
    "company": "What is the company name?",
    "date": "What is the date?",
    "address": "What is the address?",
    "total": "What is the total amount?",
}
INVOICE_QUESTIONS = {
    "amount": "What is the total amount?",
    "date": "What is the invoice date?",
    "invoice_number": "What is the invoice number?",
}
# The sample contract (sample_docs/contract.pdf, five pages; its README lists the answers):
# question, the answer as printed, the page that prints it (None: wherever it is printed).
CONTRACT_QUESTIONS = [
    ("Who is the provider?", "Bluefield Analytics GmbH", None),
    ("Who is the client?", "Marlow & Finch Retail plc", None),
    ("When was the agreement made?", "3 June 2024", 1),
    ("How long is the initial term?", "twenty-four (24) months", 2),
    ("When does the initial term end?", "2 June 2026", 2),
    ("What is the monthly fee?", "EUR 4,750.00", 3),
    ("What is the set-up fee?", "EUR 12,400.00", 3),
    ("Within how many days must invoices be paid?", "thirty (30) days", 3),
    ("Which law governs the agreement?", "the laws of England and Wales", 4),
    ("Which state's law governs the agreement?", "the laws of England and Wales", 4),
    ("Who signed for the client?", "Daniel Okafor", 5),
]
MONTHS = {
    1: ["january", "jan", "januar", "janvier"], 2: ["february", "feb", "februar"], 3: ["march", "mar", "märz"],
    4: ["april", "apr"], 5: ["may", "mai"], 6: ["june", "jun", "juni"], 7: ["july", "jul", "juli"],
    8: ["august", "aug"], 9: ["september", "sep", "sept"], 10: ["october", "oct", "oktober"],
    11: ["november", "nov"], 12: ["december", "dec", "dezember"],
}


@dataclass
class Question:
    doc: str
    field: str
    question: str
    # alternatives: each a list of boxes (page number, (x0, y0, x1, y1)); one alternative
    # wholly kept is a hit.
    regions: list[list[tuple[int, tuple[float, float, float, float]]]]


def _norm(s: str) -> str:
    return re.sub(r"[^0-9a-z]", "", s.lower())


# --- receipts ----------------------------------------------------------------------------------

def receipt_pages(data: Path, cache_file: Path) -> dict[str, list[documents.Page]]:
    cache = {}
    if cache_file.exists():
        with open(cache_file, "rb") as fh:
            cache = pickle.load(fh)
    out = {}
    changed = False
    for img in sorted(glob.glob(str(data / "sroie" / "img" / "*.jpg"))):
        if img in cache:
            pages = documents.load(img, ocr=None)
            for page, (_n, _w, _h, words, source) in zip(pages, cache[img]):
                page.words = list(words)
                page.source = source
        else:
            print(f"OCR {img} (cached after this run)", file=sys.stderr)
            pages = documents.load(img)
            cache[img] = [(p.number, p.width, p.height, p.words, p.source) for p in pages]
            changed = True
        out[img] = pages
    if changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_file, "wb") as fh:
            pickle.dump(cache, fh)
    return out


def _box_lines(csv_path: Path) -> list[tuple[tuple[float, float, float, float], str]]:
    lines = []
    for row in csv_path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = row.split(",", 8)
        if len(parts) < 9:
            continue
        try:
            xs = [float(v) for v in parts[0:8:2]]
            ys = [float(v) for v in parts[1:8:2]]
        except ValueError:
            continue
        lines.append(((min(xs), min(ys), max(xs), max(ys)), parts[8]))
    return lines


def receipt_questions(data: Path, pages: dict[str, list]) -> tuple[list[Question], list[str]]:
    qs, missing = [], []
    for img, doc_pages in pages.items():
        stem = Path(img).stem
        key = json.loads((data / "sroie" / "key" / f"{stem}.json").read_text())
        lines = _box_lines(data / "sroie" / "box" / f"{stem}.csv")
        for field_name, question in RECEIPT_QUESTIONS.items():
            value = _norm(key.get(field_name, ""))
            if not value:
                continue
            if field_name in ("total", "date"):
                alts = [[(1, box)] for box, text in lines if value in _norm(text)]
                if not alts:
                    best = max(lines, key=lambda lt: difflib.SequenceMatcher(None, value, _norm(lt[1])).ratio())
                    alts = [[(1, best[0])]]
                    missing.append(f"{stem} {field_name}: nearest line {best[1]!r}")
            else:
                best_run, best_ratio = None, 0.0
                for i in range(len(lines)):
                    for j in range(i + 1, min(len(lines), i + 6) + 1):
                        text = _norm("".join(t for _, t in lines[i:j]))
                        r = difflib.SequenceMatcher(None, value, text).ratio()
                        if r > best_ratio + 1e-9:
                            best_run, best_ratio = (i, j), r
                i, j = best_run
                alts = [[(1, box) for box, _ in lines[i:j]]]
                if best_ratio < 0.8:
                    missing.append(f"{stem} {field_name}: best run ratio {best_ratio:.2f}")
            qs.append(Question(img, field_name, question, alts))
    return qs, missing


# --- invoices ----------------------------------------------------------------------------------

def _amount_forms(v: float) -> set[str]:
    forms = {f"{v:.2f}", f"{v:,.2f}", f"{v:.2f}".replace(".", ","), f"{v:,.2f}".replace(",", " ").replace(".", ",")}
    if float(v).is_integer():
        forms |= {f"{int(v)}", f"{int(v):,}"}
    return {_norm(f) for f in forms}


def _date_forms(iso: str) -> set[str]:
    y, m, d = (int(x) for x in iso.split("-"))
    forms = set()
    for dd in {f"{d:02d}", str(d)}:
        for mm in {f"{m:02d}", str(m)}:
            for yy in (str(y), str(y)[2:]):
                for sep in "/.-":
                    forms |= {f"{dd}{sep}{mm}{sep}{yy}", f"{mm}{sep}{dd}{sep}{yy}", f"{y}{sep}{mm}{sep}{dd}"}
        for name in MONTHS[m]:
            forms |= {f"{dd} {name} {y}", f"{name} {dd} {y}", f"{dd}. {name} {y}", f"{name} {dd}, {y}"}
    return {_norm(f) for f in forms}


def _find_spans(page, forms: set[str]) -> list[list[tuple[int, tuple]]]:
    """Runs of consecutive words on one line whose joined text is one of ``forms``."""
    by_line: dict[int, list] = {}
    for w in page.words:
        by_line.setdefault(w.line, []).append(w)
    alts = []
    for ws in by_line.values():
        ws.sort(key=lambda w: w.x0)
        for i in range(len(ws)):
            text = ""
            for j in range(i, min(len(ws), i + 6)):
                text += _norm(ws[j].text)
                if text in forms:
                    alts.append([(page.number, w.box) for w in ws[i:j + 1]])
                    break
                if len(text) > max(len(f) for f in forms):
                    break
    return alts


def invoice_questions(data: Path) -> tuple[dict[str, list], list[Question], list[str]]:
    pages_by_doc, qs, missing = {}, [], []
    for pdf in sorted(glob.glob(str(data / "invoices" / "*.pdf"))):
        truth = json.loads(Path(pdf).with_suffix(".json").read_text())[0]
        doc_pages = documents.load(pdf)
        pages_by_doc[pdf] = doc_pages
        for field_name, question in INVOICE_QUESTIONS.items():
            if field_name not in truth:
                continue
            v = truth[field_name]
            if field_name == "amount":
                forms = _amount_forms(float(v))
            elif field_name == "date":
                forms = _date_forms(v)
            else:
                forms = {_norm(v)}
            alts = [a for p in doc_pages for a in _find_spans(p, forms)]
            if not alts:
                missing.append(f"{Path(pdf).name} {field_name}: {v!r} not printed; skipped")
                continue
            qs.append(Question(pdf, field_name, question, alts))
    return pages_by_doc, qs, missing


# --- the sample contract ---------------------------------------------------------------------

def contract_questions() -> tuple[dict[str, list], list[Question], list[str]]:
    pdf = str(ROOT / "sample_docs" / "contract.pdf")
    doc_pages = documents.load(pdf)
    qs, missing = [], []
    for i, (question, answer, page) in enumerate(CONTRACT_QUESTIONS):
        alts = [a for p in doc_pages if page in (None, p.number) for a in _find_spans(p, {_norm(answer)})]
        if not alts:
            missing.append(f"contract: {answer!r} not found on page {page}; skipped")
            continue
        qs.append(Question(pdf, f"q{i + 1:02d}", question, alts))
    return {pdf: doc_pages}, qs, missing


# --- selection methods ----------------------------------------------------------------------

def _covered(box, page, kept_boxes) -> bool:
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(page.width, box[2]), min(page.height, box[3])
    if x1 <= x0 or y1 <= y0:
        return True
    inset = min(1.0, (x1 - x0) / 4, (y1 - y0) / 4)
    for i in range(7):
        for j in range(3):
            x = x0 + inset + (x1 - x0 - 2 * inset) * i / 6
            y = y0 + inset + (y1 - y0 - 2 * inset) * j / 2
            if not any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in kept_boxes):
                return False
    return True


def hit(q: Question, pages, kept_keys: set, regions=None) -> bool:
    by_number = {p.number: p for p in pages}
    kept_boxes: dict[int, list] = {}
    for t in q._tiles:  # noqa: SLF001 - set by run()
        if t.key in kept_keys:
            kept_boxes.setdefault(t.page.number, []).append(t.box)
    for alt in regions if regions is not None else q.regions:
        if all(_covered(box, by_number[pn], kept_boxes.get(pn, [])) for pn, box in alt):
            return True
    return False


def oracle_hit(q: Question, pages, ts, keep) -> bool:
    """Whether any set of ``budget`` tiles could hold the answer region (the best possible)."""
    import itertools

    n = relevance.budget(len(ts), keep)
    for alt in q.regions:
        near = [t for t in ts if any(pn == t.page.number and t.box[0] < b[2] and t.box[2] > b[0]
                                     and t.box[1] < b[3] and t.box[3] > b[1] for pn, b in alt)]
        for k in range(1, min(n, len(near)) + 1):
            for combo in itertools.combinations(near, k):
                if hit(q, pages, {t.key for t in combo}, regions=[alt]):
                    return True
    return False


def docq_keys(q, ts, keep, semantic=False):
    scores = relevance.score(q.question, ts, semantic=semantic)
    return {s.tile.key for s in relevance.select(scores, keep)}


def centre_keys(ts, keep):
    n = relevance.budget(len(ts), keep)

    def dist(t):
        cx, cy = (t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2
        return math.hypot((cx - t.page.width / 2) / t.page.width, (cy - t.page.height / 2) / t.page.height)

    return {t.key for t in sorted(ts, key=lambda t: (dist(t), t.key))[:n]}


def random_keys(ts, keep, rng):
    n = relevance.budget(len(ts), keep)
    return {t.key for t in rng.sample(ts, n)}


def n_pages_total(all_pages) -> int:
    return sum(len(p) for p in all_pages.values())


def _empty_text_caches() -> None:
    """Empty the caches keyed by a line's or a token's text (values read, tokens, stems)."""
    from docvqa_cli.values import find, numbers

    rvocab = sys.modules["docvqa_cli.relevance.vocabulary"]  # the module (the package exports a function of its name)

    for mod, names in ((find, ("_find_values", "parse")),
                       (numbers, ("number_readings", "parse_number", "parse_amount", "parse_percent", "parse_id")),
                       (pagetext, ("_line_values", "_id_strength")), (rvocab, ("word_tokens",))):
        for name in names:
            fn = getattr(mod, name, None)
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()


def run(args) -> int:
    data = Path(args.data).resolve()
    cache_file = Path(tempfile.gettempdir()) / "docq-bench" / f"sroie-{args.ocr}.pkl"
    receipts = receipt_pages(data, cache_file)
    rq, miss_r = receipt_questions(data, receipts)
    invoices, iq, miss_i = invoice_questions(data)
    contracts, cq, miss_c = contract_questions()
    all_pages = {**receipts, **invoices, **contracts}
    questions = rq + iq + cq
    group = {id(q): "receipt" for q in rq} | {id(q): "invoice" for q in iq} | {id(q): "contract" for q in cq}
    tiles_of = {d: [t for p in ps for t in tiles_mod.split(p, args.tile_px, args.max_tiles)] for d, ps in all_pages.items()}
    for q in questions:
        q._tiles = tiles_of[q.doc]  # noqa: SLF001

    methods = ["docq"] + (["docq+semantic"] if args.semantic else []) + ["random", "centre", "oracle"]
    keeps = [0.5, 0.25]
    results: dict[tuple[str, float], list[float]] = {}
    per_field: dict[tuple[str, float, str], list[float]] = {}
    misses = []
    for q in questions:
        ts = tiles_of[q.doc]
        pages = all_pages[q.doc]
        for keep in keeps:
            for m in methods:
                if m == "docq":
                    r = float(hit(q, pages, docq_keys(q, ts, keep)))
                    if not r:
                        misses.append(f"keep {keep}: {Path(q.doc).name} {q.field}")
                elif m == "docq+semantic":
                    r = float(hit(q, pages, docq_keys(q, ts, keep, semantic=True)))
                elif m == "oracle":
                    r = float(oracle_hit(q, pages, ts, keep))
                elif m == "centre":
                    r = float(hit(q, pages, centre_keys(ts, keep)))
                else:
                    rng = random.Random(12345)
                    r = statistics.mean(float(hit(q, pages, random_keys(ts, keep, rng))) for _ in range(args.seeds))
                kind = group[id(q)]
                if kind == "contract":  # the sample contract: one row of its own, not in the dev recall
                    results.setdefault((m, keep, "contract"), []).append(r)
                    per_field.setdefault((m, keep, "sample contract (all questions)"), []).append(r)
                    continue
                results.setdefault((m, keep), []).append(r)
                per_field.setdefault((m, keep, f"{kind} {q.field}"), []).append(r)

    if args.semantic:  # time of the semantic part alone, model loaded, per page
        relevance.semantic_scorer()._cache.clear()  # noqa: SLF001
        t0 = time.perf_counter()
        for d, ps in all_pages.items():
            relevance.score(RECEIPT_QUESTIONS["total"], tiles_of[d], semantic=True)
        sem_ms = (time.perf_counter() - t0) * 1000 / n_pages_total(all_pages)
    # Timing: scoring and selection, per page, OCR and tiling excluded. Cold = the page's
    # text analysis included (first question on a document); warm = later questions.
    cold, warm = [], []
    for _ in range(args.repeat):
        for d, ps in all_pages.items():
            ts = tiles_of[d]
            relevance._PAGE_CACHE.clear()  # noqa: SLF001
            qs = [q for q in questions if q.doc == d]
            for k, q in enumerate(qs):
                t0 = time.perf_counter()
                relevance.select(relevance.score(q.question, ts), 0.5)
                dt = (time.perf_counter() - t0) * 1000 / len(ps)
                (cold if k == 0 else warm).append(dt)

    # The page analysis alone (what a first question adds), with every per-text cache emptied
    # before each document: CPU time, which other jobs on a shared machine do not inflate.
    analysis, reader = [], []
    line_texts = {d: [[ln.text for ln in values.group_lines(p.words)] for p in ps] for d, ps in all_pages.items()}
    for _ in range(args.repeat):
        t_all = t_values = 0.0
        for d, ps in all_pages.items():
            _empty_text_caches()
            t0 = time.process_time()
            for p in ps:
                pagetext.analyse_page(p.words)
            t_all += time.process_time() - t0
            _empty_text_caches()  # the values reader alone, on the same lines
            t0 = time.process_time()
            for texts in line_texts[d]:
                for text in texts:
                    values.find_values(text)
            t_values += time.process_time() - t0
        analysis.append(t_all * 1000 / n_pages_total(all_pages))
        reader.append(t_values * 1000 / n_pages_total(all_pages))

    n_pages = sum(len(p) for p in all_pages.values())
    n_tiles = sum(len(t) for t in tiles_of.values())
    print(f"dev set: {len(receipts)} receipts, {len(invoices)} invoices, the sample contract ({n_pages} pages, "
          f"{n_tiles} tiles at tile_px={args.tile_px}, max_tiles={args.max_tiles}); {len(rq)} receipt + "
          f"{len(iq)} invoice + {len(cq)} contract questions")
    for line in miss_r + miss_i + miss_c:
        print(f"  note: {line}")
    print()
    print("| method | dev recall @ keep 0.5 | dev recall @ keep 0.25 | sample contract @ 0.5 | @ 0.25 |")
    print("| --- | --- | --- | --- | --- |")
    label = {"docq": "docq (lexical + type + layout)", "random": f"random tiles (mean of {args.seeds} seeds)",
             "centre": "tiles nearest the page centre", "docq+semantic": "docq + semantic (MiniLM)",
             "oracle": "best possible with the budget"}
    for m in methods:
        vals = [statistics.mean(results[(m, k)]) for k in keeps]
        vals += [statistics.mean(results[(m, k, "contract")]) if (m, k, "contract") in results else float("nan")
                 for k in keeps]
        print(f"| {label[m]} | {vals[0]:.3f} | {vals[1]:.3f} | {vals[2]:.3f} | {vals[3]:.3f} |")
    print()
    print("| question | " + " | ".join(f"{m} @0.5 | {m} @0.25" for m in methods) + " |")
    print("| --- |" + " --- |" * (2 * len(methods)))
    fields = sorted({k[2] for k in per_field})
    for f in fields:
        cells = []
        for m in methods:
            for keep in keeps:
                cells.append(f"{statistics.mean(per_field[(m, keep, f)]):.2f}")
        print(f"| {f} (n={len(per_field[(methods[0], keeps[0], f)])}) | " + " | ".join(cells) + " |")
    print()

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(p * len(v)))]

    print(f"page analysis, caches emptied per document: {min(analysis):.2f} ms CPU per page "
          f"(best of {args.repeat}; median {statistics.median(analysis):.2f}); of which values.find_values "
          f"{min(reader):.2f} ms (median {statistics.median(reader):.2f})")
    print(f"score + select per page (ms): cold median {statistics.median(cold):.2f}, p95 {pct(cold, 0.95):.2f}, "
          f"max {max(cold):.2f}; warm median {statistics.median(warm):.2f}, p95 {pct(warm, 0.95):.2f}, max {max(warm):.2f}")
    if args.semantic:
        print(f"with the semantic scorer (model loaded, fresh line cache): {sem_ms:.1f} ms per page")
    if misses:
        print("docq misses: " + "; ".join(misses))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    ap.add_argument("--ocr", default="rapidocr")
    ap.add_argument("--tile-px", type=int, default=tiles_mod.DEFAULT_TILE_PX)
    ap.add_argument("--max-tiles", type=int, default=tiles_mod.DEFAULT_MAX_TILES)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--semantic", action="store_true", help="also run with the semantic scorer")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
