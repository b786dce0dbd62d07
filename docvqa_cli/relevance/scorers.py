"""The text scorers: each a class with its ``name``, its ``weight`` in the fusion, a test
``applies(query)`` of whether it has anything to say about a question, and
``score(query, doc) -> [float]``, one value in [0, 1] per tile of ``doc``.

- ``LexicalScorer`` (0.3): the question's terms, field labels and their synonyms among the
  tile's words (``Doc.labels``); always applies.
- ``AnswerTypeScorer`` (0.2): values of the wanted kind in the tile, and half a label's
  lexical score for the tile right of or below it; applies when the question asks for a kind.
- ``PairScorer`` (0.5): a value of the wanted kind beside or below a matched label; applies
  when the question asks for a kind.
- ``LayoutScorer`` (0.4): the letterhead lines of the first page for fields that sit there;
  applies when the question's field has a usual place.
- ``VisualScorer`` (0.5): the model backend's hook, ``(question, tiles) -> [float]``.

The optional sentence-embedding scorer lives in ``semantic.py``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from docvqa_cli.reading.documents import Word
from docvqa_cli.reading.tiles import Tile
from docvqa_cli.relevance.index import Doc
from docvqa_cli.relevance.pagetext import LINE_KINDS
from docvqa_cli.relevance.question import Query

VisualHook = Callable[[str, Sequence[Tile]], Sequence[float]]


class Scorer:
    """One part of a tile's relevance. Subclasses set ``name`` and ``weight`` and implement
    ``score``; ``applies`` says whether the part counts for a question (default: always)."""

    name = ""
    weight = 0.0

    def applies(self, query: Query) -> bool:
        return True

    def score(self, query: Query, doc: Doc) -> list[float]:
        raise NotImplementedError


class LexicalScorer(Scorer):
    """The question's terms, field labels and their synonyms among the tile's words.

    For a question that asks for no known kind of value ("Which law governs the
    agreement?"), nothing else points at the answer, which most often goes on in the same
    text line as the words of the question: the other tiles of a matched line get
    ``line_share`` of the match."""

    name = "lexical"
    weight = 0.3
    line_share = 0.9

    def score(self, query: Query, doc: Doc) -> list[float]:
        out = [0.0] * len(doc.tiles)
        matches = doc.labels(query)
        for m in matches:
            w = m.lexical
            for wi in m.words:
                for ti in doc.tiles_of_word[m.page].get(wi, ()):
                    if w > out[ti]:
                        out[ti] = w
                    if w >= 0.5:
                        doc.evidence[ti].add((m.page, wi))
        if not query.types:
            line_best: dict[tuple[int, int], float] = {}  # (page, line) -> its best match
            for m in matches:
                key = (m.page, doc.texts[m.page].line_of[m.words[0]])
                line_best[key] = max(line_best.get(key, 0.0), m.lexical)
            for (p, li), w in line_best.items():
                credit = self.line_share * w
                for wi in doc.texts[p].lines[li].words:
                    for ti in doc.tiles_of_word[p].get(wi, ()):
                        if credit > out[ti]:
                            out[ti] = credit
        doc.lexical = out
        return out


class _ValueKindScorer(Scorer):
    """A scorer of the values of the kinds the question asks for: it applies when it asks for some."""

    def applies(self, query: Query) -> bool:
        return bool(query.types)


class AnswerTypeScorer(_ValueKindScorer):
    """Values of the wanted kind in the tile; half a label's score for the tile right of or below it."""

    name = "type"
    weight = 0.2

    def score(self, query: Query, doc: Doc) -> list[float]:
        types = query.types
        out = [0.0] * len(doc.tiles)
        if not types:
            return out
        kinds = [_strengths(pt.types, types) for pt in doc.texts]  # per page, per word
        for ti in range(len(doc.tiles)):
            kind = kinds[doc.page_of_tile[ti]]
            out[ti] = 0.6 * max([kind[wi] for wi in doc.words_of_tile[ti]], default=0.0)
        lex = doc.lexical if doc.lexical is not None else LexicalScorer().score(query, doc)
        for ti, t in enumerate(doc.tiles):
            if lex[ti] <= 0:
                continue
            for tj, u in enumerate(doc.tiles):
                if u.page is t.page and (
                    (u.row == t.row and u.col == t.col + 1) or (u.col == t.col and u.row == t.row + 1)
                ):
                    out[tj] = max(out[tj], 0.5 * lex[ti])
        return out


class PairScorer(_ValueKindScorer):
    """A value of the wanted kind right of a matched label on its line, or a few lines below it;
    for a defined term in quotes ('Acme GmbH (the "Provider")'), also before it on its line or
    on the two lines above."""

    name = "pair"
    weight = 0.5

    def score(self, query: Query, doc: Doc) -> list[float]:
        types = query.types
        out = [0.0] * len(doc.tiles)
        if not types:
            return out
        values: dict[int, list[tuple[int, Word, float]]] = {}  # per page: its values of the wanted kinds
        for m in doc.labels(query):
            if m.weight < 0.5:
                continue
            pt = doc.texts[m.page]
            if m.page not in values:
                values[m.page] = [(vi, pt.words[vi], v) for vi, v in enumerate(_strengths(pt.values, types)) if v]
            lw = [pt.words[i] for i in m.words]
            lx0, ly0 = min(w.x0 for w in lw), min(w.y0 for w in lw)
            lx1, ly1 = max(w.x1 for w in lw), max(w.y1 for w in lw)
            h = max(1.0, ly1 - ly0)
            lcy = (ly0 + ly1) / 2
            label_words = set(m.words)
            # A defined term, as contracts name their parties and things: (the "Provider").
            defines = any(ch in w.text for w in lw for ch in '"\u201c\u201d\u00ab\u00bb')
            line_kinds = LINE_KINDS.intersection(types)
            below = 1.8 * h if line_kinds and len(types) == len(line_kinds) and "address" not in types else 4.5 * h
            if line_kinds:
                # A label inside a value ("Acme Trading Company"): the label's line is the value.
                lab_line = pt.lines[pt.line_of[m.words[0]]]
                own = max(pt.types[m.words[0]].get(k, 0.0) for k in line_kinds)
                if own >= 0.8:
                    credit = m.weight * (0.6 + 0.4 * own)
                    for vi in lab_line.words:
                        for ti in doc.tiles_of_word[m.page].get(vi, ()):
                            out[ti] = max(out[ti], credit)
                            doc.evidence[ti].add((m.page, vi))
                    continue
            for vi, w, strength in values[m.page]:
                if vi in label_words:
                    continue
                dy = w.cy - lcy
                if abs(dy) <= 0.7 * h and w.x1 > lx1 - 0.5 * h:
                    geom = 1.0
                elif 0.3 * h < dy <= below and w.x1 >= lx0 - 2 * h and w.x0 <= lx1 + 8 * h:
                    geom = 0.85
                elif defines and -2.6 * h <= dy <= 0.7 * h and (dy < -0.7 * h or w.x1 <= lx0 + 0.5 * h):
                    geom = 0.9  # the defined value comes before its name: 'Acme GmbH (the "Provider")'
                else:
                    continue
                credit = m.weight * geom * (0.6 + 0.4 * strength)
                for ti in doc.tiles_of_word[m.page].get(vi, ()):
                    if credit > out[ti]:
                        out[ti] = credit
                    doc.evidence[ti].add((m.page, vi))
        return out


def _strengths(per_word: list[dict[str, float]], types: Sequence[str]) -> list[float]:
    """Per word, its strongest value among ``types`` (0.0 when none)."""
    if len(types) == 1:
        typ = types[0]
        return [d.get(typ, 0.0) for d in per_word]
    return [max([d.get(typ, 0.0) for typ in types], default=0.0) for d in per_word]


class LayoutScorer(Scorer):
    """Fields that live in a letterhead: the top lines of the first page, values of the kind first."""

    name = "layout"
    weight = 0.4
    share = 0.3  # the top 30 % of the first page's text lines

    def applies(self, query: Query) -> bool:
        return bool(query.where)

    def score(self, query: Query, doc: Doc) -> list[float]:
        out = [0.0] * len(doc.tiles)
        if query.where != "top":
            return out
        for ti, t in enumerate(doc.tiles):
            if t.page.number != doc.first_page:
                continue
            pt = doc.texts[doc.page_of_tile[ti]]
            best = 0.0
            for wi in doc.words_of_tile[ti]:
                prior = 1.0 - pt.lines[pt.line_of[wi]].rank / self.share
                if prior <= 0:
                    continue
                kind = max((pt.types[wi].get(typ, 0.0) for typ in query.types), default=0.0)
                best = max(best, prior * (0.5 + 0.5 * kind))
            out[ti] = best
        return out


class VisualScorer(Scorer):
    """A model backend's visual relevance: ``hook(question, tiles) -> [float in [0, 1]]``."""

    name = "visual"
    weight = 0.5

    def __init__(self, hook: VisualHook):
        self.hook = hook

    def score(self, query: Query, doc: Doc) -> list[float]:
        vals = [float(v) for v in self.hook(query.text, doc.tiles)]
        if len(vals) != len(doc.tiles):
            raise ValueError(f"the visual scorer gave {len(vals)} scores for {len(doc.tiles)} tiles")
        return [min(1.0, max(0.0, v)) for v in vals]
