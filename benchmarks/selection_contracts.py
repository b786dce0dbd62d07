"""Tile recall on generated multi-page contracts: dense clauses, a running footer, and the
answers of five questions (governing law, notice period, annual fee, liability cap, expiry
date) at random places, with the wording of the filler and the parties drawn at random.

The dev set has no contract; these PDFs (real PDFs, rendered and read by PyMuPDF like any
user's) stand in for one, with no rule written for them: a check that selection holds the
answer in long documents where the same words ("Agreement", "laws") are everywhere.

    python benchmarks/selection_contracts.py [--docs 12] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402

from docvqa_cli import relevance  # noqa: E402
from docvqa_cli.reading import documents, tiles  # noqa: E402

FILLER = [
    "The {p} shall perform its obligations with reasonable skill and care under this {a}.",
    "Each party shall comply with all applicable laws and regulations in connection with this {a}.",
    "Nothing in this {a} shall create a partnership or joint venture between the parties.",
    "The {p} may subcontract any of its obligations with the prior written consent of the {c}.",
    "All notices under this {a} shall be in writing and delivered to the addresses above.",
    "The {c} shall provide the {p} with access to its premises and systems as reasonably required.",
    "Any amendment to this {a} must be agreed in writing and signed by both parties.",
    "Each party warrants that it has full power and authority to enter into this {a}.",
    "The {p} shall maintain adequate insurance cover for the duration of this {a}.",
    "Intellectual property created under this {a} shall vest in the {c} upon payment.",
]
ANSWERS = [  # question, the clause that answers it, the answer words
    ("Which law governs the agreement?", "This {a} is governed by and construed in accordance with the laws of {x}.", ["Ontario", "Bavaria", "Scotland", "Delaware"]),
    ("How long is the notice period?", "Either party may terminate this {a} by giving {x} written notice to the other.", ["sixty (60) days'", "ninety (90) days'", "three (3) months'"]),
    ("What is the annual fee?", "In consideration of the services the {c} shall pay an annual fee of {x}, plus VAT.", ["EUR 18,500.00", "GBP 9,250.00", "USD 42,000.00"]),
    ("What is the liability cap?", "The aggregate liability of the {p} shall not exceed {x} in any contract year.", ["EUR 250,000.00", "USD 1,000,000.00"]),
    ("When does the agreement expire?", "Unless renewed, this {a} expires on {x}.", ["31 December 2027", "30 June 2026", "1 March 2028"]),
]


KEEPS = (0.25, 0.1, 0.05)


def make_contract(path: Path, rng: random.Random) -> list[tuple[str, str, int]]:
    """Write one contract to ``path``; return its (question, answer, page) triples."""
    a = rng.choice(["Agreement", "Contract"])
    p = rng.choice(["Supplier", "Contractor", "Provider"])
    c = rng.choice(["Customer", "Client", "Company"])
    n_pages = rng.randint(4, 9)
    clauses = [[rng.choice(FILLER).format(a=a, p=p, c=c) for _ in range(14)] for _ in range(n_pages)]
    qs = []
    slots = rng.sample([(pg, pos) for pg in range(n_pages) for pos in range(14)], len(ANSWERS))
    for (q, tpl, xs), (pg, pos) in zip(ANSWERS, slots):
        x = rng.choice(xs)
        clauses[pg][pos] = tpl.format(a=a, p=p, c=c, x=x)
        qs.append((q, x, pg + 1))
    doc = pymupdf.open()
    for pg in range(n_pages):
        page = doc.new_page(width=595, height=842)
        for k, cl in enumerate(clauses[pg]):
            y = 80 + 46 * k
            page.insert_textbox(pymupdf.Rect(72, y, 523, y + 40), f"{pg + 1}.{k + 1} {cl}", fontsize=9.5)
        page.insert_text((72, 810), f"Master Services {a} - {p} / {c} - Page {pg + 1} of {n_pages}", fontsize=8)
    doc.save(str(path))
    return qs


def _run(words, answer: str) -> list:
    """The page's words that print ``answer``: the first run of consecutive words that spell it."""
    want = [t.strip(",.'") for t in answer.split()]
    texts = [w.text.strip(",.'") for w in words]
    for i in range(len(words) - len(want) + 1):
        if texts[i:i + len(want)] == want:
            return words[i:i + len(want)]
    raise SystemExit(f"answer {answer!r} not found on its page")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    hits: dict[tuple[str, float], list[bool]] = {}
    n_tiles = 0
    with tempfile.TemporaryDirectory() as tmp:
        for d in range(args.docs):
            path = Path(tmp) / f"contract{d}.pdf"
            qs = make_contract(path, rng)
            pages = documents.load(str(path))
            ts = [t for pp in pages for t in tiles.split(pp, tiles.DEFAULT_TILE_PX, tiles.DEFAULT_MAX_TILES)]
            n_tiles += len(ts)
            for q, x, pg in qs:
                page = pages[pg - 1]
                answer_words = _run(page.words, x)
                scores = relevance.score(q, ts)
                for keep in KEEPS:
                    kept = [s.tile for s in relevance.select(scores, keep) if s.tile.page is page]
                    hits.setdefault((q, keep), []).append(
                        all(any(t.contains(w.box) for t in kept) for w in answer_words))
    print(f"{args.docs} generated contracts, {n_tiles} tiles (tile_px={tiles.DEFAULT_TILE_PX}); a hit = every word "
          "of the answer lies in a kept tile")
    print()
    print("| question | " + " | ".join(f"keep {k}" for k in KEEPS) + " |")
    print("| --- |" + " --- |" * len(KEEPS))
    for q, _tpl, _xs in ANSWERS:
        print(f"| {q} | " + " | ".join(f"{sum(hits[(q, k)])}/{len(hits[(q, k)])}" for k in KEEPS) + " |")
    total = [" | ".join(f"{sum(v for (q, kk), vs in hits.items() if kk == k for v in vs)}/"
                        f"{sum(len(vs) for (q, kk), vs in hits.items() if kk == k)}" for k in KEEPS)]
    print(f"| all | {total[0]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
