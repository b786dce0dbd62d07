"""The document as the scorers see it: its tiles, their pages' text, and where a question's
phrases occur.

``Doc(tiles)`` maps every tile to its page's analysed words (``pagetext.page_text``) and
back (a word wider than the tile holding its centre belongs to every tile it runs into);
``Doc.labels(query)`` finds the query's phrases as consecutive tokens on one text line,
with one OCR slip allowed in words of five letters or more and 0/O-style confusions undone.
Per-question results are cached on the ``Doc``; the scorers share one ``Doc`` per question.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

from docvqa_cli.reading.documents import Word
from docvqa_cli.reading.tiles import Tile
from docvqa_cli.relevance.pagetext import PageText, page_text
from docvqa_cli.relevance.question import Query
from docvqa_cli.relevance.vocabulary import _CONFUSE, _deletions

# Document frequency: a phrase found on more than COMMON of the tiles that hold words counts
# less and less, down to FLOOR of its weight on every tile; documents of fewer than MIN_TILES
# such tiles are too small to tell a common word from a label. In a document of MIN_PAGES
# pages or more, a phrase on more than COMMON_PAGES of its pages (a running header or footer,
# the word "Agreement" in an agreement) counts less in the same way.
COMMON = 0.2
FLOOR = 0.2
MIN_TILES = 8
COMMON_PAGES = 0.5
MIN_PAGES = 3


@dataclass
class LabelMatch:
    page: int  # index into Doc.pages
    words: list[int]
    weight: float  # the phrase's weight in the query
    phrase: tuple = ()
    spread: float = 1.0  # the phrase's document-frequency factor (``df_factor``)

    @property
    def lexical(self) -> float:
        """The match's lexical score: its weight, less when the phrase is everywhere."""
        return self.weight * self.spread


def df_factor(tiles_with: int, tiles: int, pages_with: int = 0, pages: int = 0) -> float:
    """How much a phrase found on ``tiles_with`` of a document's ``tiles`` and ``pages_with``
    of its ``pages`` (those holding words) still counts: 1 up to a share of ``COMMON`` of
    the tiles, then ``log(share) / log(COMMON)``; the same over pages with ``COMMON_PAGES``;
    the smaller of the two, never below ``FLOOR``."""
    factor = 1.0
    if tiles >= MIN_TILES and tiles_with > COMMON * tiles:
        factor = math.log(tiles_with / tiles) / math.log(COMMON)
    if pages >= MIN_PAGES and pages_with > COMMON_PAGES * pages:
        factor = min(factor, math.log(pages_with / pages) / math.log(COMMON_PAGES))
    return max(FLOOR, factor)


class Doc:
    """The tiles of a document with their pages' text, and per-question matches (cached)."""

    def __init__(self, tiles: Sequence[Tile]):
        self.tiles = list(tiles)
        self.pages = []
        self.page_of_tile: list[int] = []
        self.texts: list[PageText] = []
        self._pos: list[dict[int, int]] = []  # per page: id(word) -> word index
        index: dict[int, int] = {}
        for t in self.tiles:
            if id(t.page) not in index:
                index[id(t.page)] = len(self.pages)
                self.pages.append(t.page)
                text = page_text(t.page)
                self.texts.append(text)
                self._pos.append({id(w): i for i, w in enumerate(text.words)})
            self.page_of_tile.append(index[id(t.page)])
        # per page: word index -> the tiles holding the word
        self.tiles_of_word: list[dict[int, list[int]]] = [dict() for _ in self.pages]
        self.words_of_tile: list[list[int]] = []
        for ti, t in enumerate(self.tiles):
            p = self.page_of_tile[ti]
            pos = self._pos[p]
            idx = [i for i in map(pos.get, map(id, t.words)) if i is not None]
            self.words_of_tile.append(idx)
            for i in idx:
                self.tiles_of_word[p].setdefault(i, []).append(ti)
        # A word wider than the tile holding its centre (a long line read as one word) also
        # belongs to the tiles it runs into: all of them are needed to see it whole.
        tiles_of_page: dict[int, list[int]] = {}
        for ti, p in enumerate(self.page_of_tile):
            tiles_of_page.setdefault(p, []).append(ti)
        for p, holders in enumerate(self.tiles_of_word):
            words = self.texts[p].words
            for i, tis in list(holders.items()):
                w = words[i]
                box = w.box
                for ti in tis:
                    if self.tiles[ti].contains(box):
                        break
                else:
                    self._spread(p, i, w, tis, tiles_of_page[p])
        self.first_page = min((p.number for p in self.pages), default=1)
        self._labels: dict[str, list[LabelMatch]] = {}
        self.lexical: list[float] | None = None
        self.evidence: list[set[tuple[int, int]]] = [set() for _ in self.tiles]  # (page idx, word idx)

    def _spread(self, p: int, i: int, w: Word, tis: list[int], page_tiles: list[int]) -> None:
        """Word ``i`` of page ``p``, wider than its tiles: add it to every tile it runs into."""
        for tj in page_tiles:
            b = self.tiles[tj].box
            if tj not in tis and b[0] < w.x1 and b[2] > w.x0 and b[1] <= w.cy < b[3]:
                tis.append(tj)
                self.words_of_tile[tj].append(i)

    def labels(self, query: Query) -> list[LabelMatch]:
        """Where the query's phrases occur: consecutive tokens on one text line."""
        if query.text in self._labels:
            return self._labels[query.text]
        vocab = query.vocab
        dels: dict[str, str] = {}
        for v in vocab:
            if len(v) >= 5 and v.isalpha():
                for d in _deletions(v) | {v}:
                    dels.setdefault(d, v)
        by_first: dict[str, list[tuple[tuple, float]]] = {}
        for p, w in query.phrases.items():
            by_first.setdefault(p[0], []).append((p, w))
        out = []
        canon: dict[str, str] = {}  # token -> its canonical form, for this query
        for pi, pt in enumerate(self.texts):
            for ln in pt.lines:
                seq: list[tuple[str, int]] = []
                for wi in ln.words:
                    for tok in pt.toks[wi]:
                        c = canon.get(tok)
                        if c is None:
                            c = canon[tok] = self._canon(tok, vocab, dels)
                        seq.append((c, wi))
                for s in range(len(seq)):
                    for phrase, weight in by_first.get(seq[s][0], ()):
                        n = len(phrase)
                        if tuple(t for t, _ in seq[s:s + n]) == phrase:
                            out.append(LabelMatch(pi, sorted({wi for _, wi in seq[s:s + n]}), weight, phrase))
        self._weigh_by_frequency(out)
        self._labels[query.text] = out
        return out

    def _weigh_by_frequency(self, matches: list[LabelMatch]) -> None:
        """Set each match's document-frequency factor from the tiles its phrase is found on."""
        tiles_of: dict[tuple, set[int]] = {}
        pages_of: dict[tuple, set[int]] = {}
        for m in matches:
            held = tiles_of.setdefault(m.phrase, set())
            pages_of.setdefault(m.phrase, set()).add(m.page)
            for wi in m.words:
                held.update(self.tiles_of_word[m.page].get(wi, ()))
        n = sum(1 for idx in self.words_of_tile if idx)
        n_pages = sum(1 for pt in self.texts if pt.words)
        factor = {p: df_factor(len(t), n, len(pages_of[p]), n_pages) for p, t in tiles_of.items()}
        for m in matches:
            m.spread = factor[m.phrase]

    @staticmethod
    def _canon(tok: str, vocab: set[str], dels: dict[str, str]) -> str:
        for form, form_dels in _variants(tok):
            if form in vocab:
                return form
            if form_dels:
                cand = dels.get(form)
                if cand is None:
                    for d in form_dels:
                        cand = dels.get(d)
                        if cand is not None:
                            break
                if cand is not None and abs(len(cand) - len(form)) <= 1 and (cand[0] == form[0] or cand[-1] == form[-1]):
                    return cand
        return tok


@functools.lru_cache(maxsize=65536)
def _variants(tok: str) -> tuple[tuple[str, frozenset], ...]:
    """A token's forms (as read, and with 0/O-style slips undone) and their one-deletion forms."""
    return tuple((f, frozenset(_deletions(f)) if len(f) >= 5 and f.isalpha() else frozenset())
                 for f in _fuzzy_forms(tok))



def _fuzzy_forms(tok: str) -> list[str]:
    forms = [tok]
    digits = sum(map(str.isdigit, tok))
    if digits and sum(map(str.isalpha, tok)) >= 2 * digits:
        forms.append(tok.translate(_CONFUSE))
    return forms
