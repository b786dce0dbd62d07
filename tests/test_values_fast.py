"""The values reader's shortcuts change no result: on real lines of the sample PDFs (and of the
dev invoices when present) ``find_values`` reads the values the full reader read, and each
cheap test that lets it skip a pattern holds wherever that pattern matches."""

from __future__ import annotations

import glob
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import SAMPLES
from docvqa_cli.reading import documents
from docvqa_cli.values import dates, durations, find, find_values, group_lines, numbers

DEV_INVOICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev" / "invoices"


def _lines(paths) -> list[str]:
    out = []
    for path in paths:
        for page in documents.load(str(path)):
            out.extend(ln.text for ln in group_lines(page.words))
    return out


@pytest.fixture(scope="module")
def sample_lines() -> list[str]:
    return _lines([SAMPLES / "contract.pdf", SAMPLES / "invoice.pdf"])


@pytest.fixture(scope="module")
def texts(sample_lines) -> list[str]:
    """Every real line, in upper and lower case, each word alone, and neighbours joined."""
    lines = sample_lines + _lines(sorted(glob.glob(str(DEV_INVOICES / "*.pdf"))))
    out = set(lines)
    for a, b in zip(lines, lines[1:]):
        out.update((a.upper(), a.lower(), a + " " + b, *a.split(" ")))
    return sorted(out)


def _read(text: str) -> list[tuple]:
    """Each value as (kind, printed text, what it reads as)."""
    out = []
    for f in find_values(text):
        v = f.value
        what = {"date": lambda: v.candidates, "time": lambda: v.iso, "duration": lambda: (v.count, v.unit),
                "percent": lambda: v.value, "amount": lambda: (v.value, v.currency), "number": lambda: v.readings,
                "id": lambda: v.key}[f.kind]()
        out.append((f.kind, text[f.start:f.end], what))
    return out


D = Decimal
# Real lines of sample_docs/contract.pdf and invoice.pdf, and what the reader read on them
# before its shortcuts (issue 12: faster page analysis, no result changed).
EXPECTED = {
    "This Service Agreement (the \"Agreement\") is made on 3 June 2024 (the \"Effective":
        [("date", "3 June 2024", ("2024-06-03",))],
    "(1) Bluefield Analytics GmbH, Torstrasse 112, 10119 Berlin, Germany (the \"Provider\");":
        [("number", "1", (D(1),)), ("number", "112, 10119", (D("112.10119"),))],
    "(2) Marlow & Finch Retail plc, 9 Eastcheap, London EC3M 1BN, United Kingdom":
        [("number", "2", (D(2),)), ("number", "9", (D(9),)), ("id", "EC3M", "EC3M"), ("id", "1BN", "1BN")],
    "2.1 The Provider shall deliver a monthly sales report within ten (10) working days":
        [("number", "2.1", (D("2.1"),)), ("duration", "ten (10) working days", (D(10), "day"))],
    "twenty-four (24) months, ending on 2 June 2026.":
        [("duration", "twenty-four (24) months", (D(24), "month")), ("date", "2 June 2026", ("2026-06-02",))],
    "ninety (90) days' written notice before the end of the current term.":
        [("duration", "ninety (90) days", (D(90), "day"))],
    "4.1 The Client shall pay the Provider a fixed fee of EUR 4,750.00 per month,":
        [("number", "4.1", (D("4.1"),)), ("amount", "EUR 4,750.00", (D("4750.00"), "EUR"))],
    "4.3 Late payments bear interest at 4% per year above the base rate of the":
        [("number", "4.3", (D("4.3"),)), ("percent", "4%", D(4))],
    "Page 3 of 5": [("number", "3", (D(3),)), ("number", "5", (D(5),))],
    "Invoice No: NW-2024-0173": [("id", "NW-2024-0173", "NW20240173")],
    "VAT reg. GB 284 6613 09": [("number", "284", (D(284),)), ("number", "6613", (D(6613),)),
                                ("number", "09", (D(9),))],
    "Due date: 17 April 2024": [("date", "17 April 2024", ("2024-04-17",))],
    "Laser printer paper A4, box of 5 reams": [("id", "A4", "A4"), ("number", "5", (D(5),))],
    "Toner cartridge TN-2420, black": [("id", "TN-2420", "TN2420")],
    "1,358.10": [("amount", "1,358.10", (D("1358.10"), None))],
    "VAT 20%": [("percent", "20%", D(20))],
    "Payment by bank transfer to IBAN GB29 NWBK 6016 1331 9268 19 within 30 days.":
        [("id", "GB29", "GB29"), ("number", "6016", (D(6016),)), ("number", "1331", (D(1331),)),
         ("number", "9268", (D(9268),)), ("number", "19", (D(19),)), ("duration", "30 days", (D(30), "day"))],
}


def test_real_lines_read_as_before(sample_lines):
    assert set(EXPECTED) <= set(sample_lines)  # the lines are the PDFs' own
    for text, want in EXPECTED.items():
        assert _read(text) == want, text
        assert _read(text) == want, text  # the cached reading is the same


def test_lines_without_digits_hold_durations_in_words_only(texts):
    no_digit = [t for t in texts if not any(map(str.isdigit, t))]
    assert no_digit
    for t in no_digit:
        assert {f.kind for f in find_values(t)} <= {"duration"}, t
    assert [f.kind for f in find_values("payable within thirty days")] == ["duration"]


def test_every_skipped_pattern_has_no_match(texts):
    """A shortcut skips a pattern only where the pattern cannot match: checked on real text."""
    checked = 0
    # case folds that are no simple lower case: the long s, the Kelvin sign, a dotted capital I
    odd = ["5 \u017fek", "5 \u212aes 10", "12 \u0130nr", "7 \u017f$", "1.00 Us$ 2 EUR 3 €"]
    for t in texts + odd:
        if not dates._TWO_DIGITS.search(t):  # noqa: SLF001
            assert not any(p.search(t) for _, p in dates._PATTERNS), t  # noqa: SLF001
        if not dates._FOUR_DIGITS.search(t):  # noqa: SLF001
            assert not any(p.search(t) for k, p in dates._PATTERNS if k in dates._NEEDS_FOUR), t  # noqa: SLF001
        if not dates._TIME_HINT.search(t):  # noqa: SLF001
            assert not dates._TIME_RE.search(t), t  # noqa: SLF001
        if not durations._UNIT_HINT.search(t):  # noqa: SLF001
            assert not durations._DURATION_RE.search(t), t  # noqa: SLF001
        if not find._PERCENT_HINT.search(t):  # noqa: SLF001
            assert not find._PERCENT_IN_TEXT.search(t), t  # noqa: SLF001
        for pos in range(len(t) + 1):
            if not find._CUR_AFTER_START.match(t, pos):  # noqa: SLF001
                assert not find._CUR_AFTER.match(t, pos), (t, pos)  # noqa: SLF001
        checked += 1
    assert checked > 300
    # and each pattern does match some of these texts, so the checks above bite
    assert any(durations._DURATION_RE.search(t) for t in texts)  # noqa: SLF001
    assert any(find._PERCENT_IN_TEXT.search(t) for t in texts)  # noqa: SLF001
    assert any(p.search(t) for t in texts for _, p in dates._PATTERNS)  # noqa: SLF001
    assert find._CUR_AFTER.match("5 \u212aes", 1) and find._CUR_AFTER.match("5 \u017fek", 1)  # noqa: SLF001


def test_cached_parsers_read_like_uncached_ones(texts):
    for t in texts:
        for tok in t.split(" "):
            for fn in (numbers.parse_number, numbers.parse_amount, numbers.parse_percent, numbers.parse_id):
                assert fn(tok) == fn.__wrapped__(tok), (fn.__name__, tok)
