"""Relevance's words on real PDFs: the Snowball stemmer and document-frequency weighting."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from docvqa_cli import relevance
from docvqa_cli.reading import documents, tiles
from docvqa_cli.relevance.index import FLOOR, df_factor


def doc_tiles(path):
    pages = documents.load(str(path))
    return [t for p in pages for t in tiles.split(p, tiles.DEFAULT_TILE_PX, tiles.DEFAULT_MAX_TILES)]


def words_of(score):
    return {w.text for w in score.tile.words}


def toks(score):
    return set(relevance.tokens(" ".join(w.text for w in score.tile.words)))


# --- the stemmer ----------------------------------------------------------------------------

def test_snowball_stems_question_and_page_words_alike():
    assert relevance.tokens("taxes") == ["tax"]  # the old suffix rule made it "taxe"
    assert relevance.tokens("How many companies?") == ["how", "mani", "compani"]
    assert relevance.tokens("governs governed governing") == ["govern"] * 3
    assert relevance.tokens("The Client's data") == ["the", "client", "data"]  # no "s" word
    assert relevance.tokens("INV-2024 no. 5") == ["inv", "2024", "no", "5"]  # ids and numbers as read
    assert relevance.parse_question("How many items?").types == ("amount",)  # the cue is stemmed too


def test_how_much_are_the_taxes_is_a_tax_question_on_a_real_invoice():
    q = relevance.parse_question("How much are the taxes?")
    assert q.fields == ["tax"] and "amount" in q.types
    # A field asked for only by a generic cue still counts when nothing more specific is named.
    assert relevance.parse_question("How much do I owe?").fields == ["total"]
    assert relevance.parse_question("What is the total tax?").fields == ["total", "tax"]
    ts = doc_tiles(SAMPLES / "invoice.pdf")  # "VAT 20%  271.62" above "Total due (GBP) 1,629.72"
    scores = relevance.score("How much are the taxes?", ts)
    best = max(scores, key=lambda s: s.score)
    assert {"VAT", "20%"} <= words_of(best)
    kept = relevance.select(scores, 0.25)
    assert any("271.62" in words_of(s) for s in kept)


# --- document frequency -----------------------------------------------------------------------

def test_df_factor():
    assert df_factor(1, 40) == 1.0 and df_factor(8, 40) == 1.0  # rare, or a share of 0.2
    assert df_factor(40, 40) == FLOOR  # on every tile
    assert 0.4 < df_factor(20, 40) < 0.5  # half the tiles: log(0.5) / log(0.2)
    assert df_factor(4, 4) == 1.0  # four tiles are too few to tell
    assert df_factor(5, 60, 5, 5) == FLOOR  # on every page of a five-page document
    assert df_factor(5, 60, 1, 2) == 1.0  # two pages are too few to tell


def test_a_word_on_every_page_of_a_contract_counts_little():
    ts = doc_tiles(SAMPLES / "contract.pdf")  # "Service Agreement: ..." in the footer of each page
    scores = relevance.score("Which state's law governs the agreement?", ts)
    law = [s for s in scores if "law" in toks(s)]
    agreement_only = [s for s in scores if toks(s) & {"agreement", "law", "govern", "contract"} == {"agreement"}]
    assert law and len(agreement_only) >= 5
    assert min(s.score for s in law) > 2 * max(s.score for s in agreement_only)
    top = sorted(scores, key=lambda s: -s.score)[:len(law)]
    assert {s.tile.key for s in top} == {s.tile.key for s in law}
    kept = relevance.select(scores, 0.1)
    assert any({"England", "Wales."} <= words_of(s) for s in kept)


def test_a_label_in_a_small_document_keeps_its_weight():
    ts = doc_tiles(SAMPLES / "invoice.pdf")
    doc = relevance.Doc(ts)
    matches = doc.labels(relevance.parse_question("What is the total amount?"))
    assert matches and all(m.spread == 1.0 for m in matches if m.phrase == ("total",))


@pytest.mark.parametrize("question", ["Who is the provider?", "What is the monthly fee?"])
def test_common_words_do_not_empty_a_contract_question(question):
    scores = relevance.score(question, doc_tiles(SAMPLES / "contract.pdf"))
    assert max(s.score for s in scores) > 0.3


# --- one reader of values: relevance sees what grounding sees ---------------------------------

AGREEMENT = [  # printed text, the kind both must see (issue 12's table of disagreements)
    ("15 gennaio 2024", "date"),
    ("15 dez 2024", "date"),
    ("KES 1,250.00", "amount"),
    ("₹1,23,456.00", "amount"),
    ("-11.80", "amount"),
    ("thirty (30) days", "duration"),
    ("12.5%", "percent"),
    ("INV-20417", "id"),
]


@pytest.mark.parametrize("text, kind", AGREEMENT)
def test_relevance_reads_values_with_the_values_module(text, kind):
    from docvqa_cli import values
    from docvqa_cli.reading.documents import Word

    words, x = [], 10.0
    for tok in f"Amount: {text}".split():
        words.append(Word(tok, x, 10, x + 8 * len(tok), 22, 0))
        x += 8 * len(tok) + 6
    pt = relevance.analyse_page(words)
    seen = {k for v in pt.values[1:] for k in v if k not in ("phone", "email")}
    assert seen == {kind}, (text, pt.values)
    assert values.parse(text).kind == kind  # what grounding reads
    assert [f.kind for f in values.find_values(f"Amount: {text}")] == [kind]
    assert not pt.values[0]  # the label itself is no value


def test_a_question_without_a_kind_of_value_keeps_the_rest_of_its_line(tmp_path):
    import pymupdf

    # Six pages of clauses; "laws" on every page, "Agreement" in every footer; the governing
    # law clause on page 4 runs across the page, its answer at the far end of the line.
    filler = ["Each party shall comply with all applicable laws and regulations under this Agreement.",
              "Nothing in this Agreement shall create a partnership between the parties at any time."]
    doc = pymupdf.open()
    for n in range(1, 7):
        page = doc.new_page(width=595, height=842)
        for i in range(12):
            text = filler[i % 2]
            if n == 4 and i == 7:
                text = "This Agreement is governed by and construed in accordance with the laws of Ontario."
            page.insert_text((40, 90 + 55 * i), f"{n}.{i + 1} {text}", fontsize=9.5)
        page.insert_text((72, 810), f"Master Services Agreement - Page {n} of 6", fontsize=8)
    pdf = tmp_path / "contract.pdf"
    doc.save(pdf)
    ts = doc_tiles(pdf)
    scores = relevance.score("Which law governs the agreement?", ts)
    answer = [s for s in scores if "Ontario." in words_of(s)]
    filler_only = [s for s in scores if "governed" not in words_of(s) and "Ontario." not in words_of(s)]
    assert answer and "governed" not in set.intersection(*(words_of(s) for s in answer))  # the line spans tiles
    assert min(s.score for s in answer) > max(s.score for s in filler_only)
    kept = relevance.select(scores, 0.25)
    assert all(any(k.tile.key == s.tile.key for k in kept) for s in answer)
