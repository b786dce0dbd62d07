"""Does ``docq ground --type TYPE TRUTH`` report exactly the typed truth? (issue 16)

For each document with typed ground truth, the true value is given to ``docq ground --type``
(the command itself, in process) and the value of its first match is compared with the truth:

- invoices (../shared/data/dev/invoices, invoice2data): ``amount`` (a number: the value must
  be the same decimal, and ``currency`` the JSON's ISO code), ``date`` (ISO), ``invoice_number``
  (type id: the same letters and digits; the page may print a label such as "#" apart);
- contract (sample_docs/contract.pdf): the dates, amounts and the duration of its README table,
  printed in long forms ("3 June 2024", "EUR 4,750.00", "thirty (30) days");
- receipts (--sroie, OCR, slower; the OCR words benchmarks/grounding.py cached in the temp
  folder are used when there): total (amount: the value; the currency is counted apart, as
  SROIE's truth has none: a receipt that prints RM should say MYR) and date; SROIE's dates are printed
  day first (Malaysia), so the ISO truth is their dmy reading; a date the receipt prints
  with day and month both <= 12 and no other date to settle the order must come back null
  and noted ambiguous without --date-order (counted as "ambiguous, reported"), and as the
  truth with ``--date-order dmy``.

    python benchmarks/typed_ground.py [--data ../shared/data/dev] [--sroie] [-v]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from docvqa_cli.cli import main  # noqa: E402

CONTRACT = [  # (type, truth as typed, text given)
    ("date", "2024-06-03", "2024-06-03"),
    ("date", "2026-06-02", "2026-06-02"),
    ("amount", ("4750.00", "EUR"), "4750.00"),
    ("amount", ("12400.00", "EUR"), "12400"),
    ("duration", "30 days", "30 days"),
    ("duration", "24 months", "24 months"),
]


def ground(doc: str, kind: str, text: str, *extra: str) -> dict | None:
    res = CliRunner().invoke(main, ["ground", "--type", kind, *extra, "--limit", "1", doc, text])
    if res.exit_code not in (0, 1) or not res.stdout.strip():
        raise RuntimeError(f"{doc} {text}: exit {res.exit_code}: {res.output}")
    out = json.loads(res.stdout.splitlines()[0])
    return out["matches"][0] if out["matches"] else None


_PAGES: dict = {}


def ground_loaded(doc: str, kind: str, text: str, *extra: str) -> dict | None:
    """What ``ground --type`` computes (``grounding.find_all``, ``typed.read_typed``), with each
    scan OCR'd once for its three cases (the command would OCR it anew each time)."""
    from docvqa_cli import grounding, typed
    from docvqa_cli.reading import documents

    if not _PAGES:  # the receipts' OCR words that benchmarks/grounding.py cached, if there
        cache = Path(tempfile.gettempdir()) / "docq-bench-grounding-ocr.pkl"
        if cache.exists():
            with open(cache, "rb") as fh:
                _PAGES.update({f"img/{stem}": pages for stem, pages in pickle.load(fh).items()})
    key = f"img/{Path(doc).stem}"
    if key not in _PAGES:
        _PAGES[key] = documents.load(doc)
    pages = _PAGES[key]
    matches = grounding.find_all(text, pages)[:1]
    if not matches:
        return None
    t = typed.read_typed(kind, text, matches[0], pages, extra[1] if extra else None)
    return {"value": t.value, "currency": t.currency, "value_note": t.note}


def same(kind: str, truth, got: dict | None) -> bool:
    if got is None or got["value"] is None:
        return False
    if kind == "amount":
        value, currency = truth
        return Decimal(got["value"]) == Decimal(value) and (currency is None or got["currency"] == currency)
    if kind == "id":
        key = "".join(ch for ch in truth if ch.isalnum()).upper()
        return "".join(ch for ch in got["value"] if ch.isalnum()).upper() == key
    return got["value"] == truth


def main_(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data" / "dev"))
    ap.add_argument("--sroie", action="store_true", help="also the 24 receipts (OCR)")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.data):
        args.data = "/work/shared/data/dev"
    cases = []  # (group, doc, kind, truth, text, extra flags)
    for js in sorted(glob.glob(f"{args.data}/invoices/*.json")):
        t = json.load(open(js))[0]
        doc = js[:-5] + ".pdf"
        cases.append(("invoice", doc, "amount", (f"{Decimal(str(t['amount'])):.2f}", t["currency"]),
                      f"{t['amount']:.2f}", ()))
        cases.append(("invoice", doc, "date", t["date"], t["date"], ()))
        cases.append(("invoice", doc, "id", t["invoice_number"], t["invoice_number"], ()))
    for kind, truth, text in CONTRACT:
        cases.append(("contract", str(ROOT / "sample_docs" / "contract.pdf"), kind, truth, text, ()))
    if args.sroie:
        for kj in sorted(glob.glob(f"{args.data}/sroie/key/*.json")):
            t = json.load(open(kj))
            doc = kj.replace("/key/", "/img/")[:-5] + ".jpg"
            cases.append(("receipt", doc, "amount", (_amount(t["total"]), None), t["total"], ()))
            cases.append(("receipt", doc, "date", _dmy(t["date"]), t["date"], ()))
            cases.append(("receipt dmy", doc, "date", _dmy(t["date"]), t["date"], ("--date-order", "dmy")))
    tally: dict = {}
    currencies: dict = {}
    for group, doc, kind, truth, text, extra in cases:
        got = ground(doc, kind, text, *extra) if group != "receipt" and group != "receipt dmy" else \
            ground_loaded(doc, kind, text, *extra)
        ok = same(kind, truth, got)
        ambiguous = bool(got and got["value"] is None and (got.get("value_note") or "").startswith("ambiguous"))
        row = tally.setdefault((group, kind), [0, 0, 0])
        row[0] += ok
        row[1] += 1
        row[2] += ambiguous
        if group == "receipt" and kind == "amount":
            currencies[got and got["currency"]] = currencies.get(got and got["currency"], 0) + 1
        if args.v or not (ok or ambiguous):
            print(f"{'ok ' if ok else 'AMB' if ambiguous else 'BAD'} {group} {os.path.basename(doc)} {kind} "
                  f"{text!r} -> {got and {k: got.get(k) for k in ('value', 'currency', 'value_note')}}")
    print("| group | type | exactly the typed truth | ambiguous, reported null |")
    print("| --- | --- | --- | --- |")
    for (group, kind), (ok, n, amb) in tally.items():
        print(f"| {group} | {kind} | {ok} / {n} | {amb} |")
    if currencies:
        print(f"receipt totals' currency: {currencies}")
    return 0


def _amount(printed: str) -> str:
    from docvqa_cli import values

    return f"{values.parse_amount(printed).value:.2f}"


def _dmy(printed: str) -> str | None:
    from docvqa_cli import values

    d = values.parse_date(printed)
    return None if d is None else d.resolve("dmy").iso


if __name__ == "__main__":
    sys.exit(main_())
