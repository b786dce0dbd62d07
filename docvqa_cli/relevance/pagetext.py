"""Question-independent analysis of a page: its text lines and the values its words hold.

``analyse_page(words) -> PageText``: words grouped into text lines by the values package's
line grouper (top to bottom, left to right), each word's tokens, and per word the kinds of
value it holds with a strength in [0, 1]. Dates, times, durations, amounts, percentages and
ids are read by ``docvqa_cli.values.find_values``, the same reader grounding uses; emails,
phone numbers and, judged on whole lines, names and addresses are read here.
``page_text(page)`` caches the analysis per page, so that several questions over one
document share it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

from docvqa_cli.reading.documents import Word
from docvqa_cli.relevance.vocabulary import Vocabulary, tokens, vocabulary, word_tokens
from docvqa_cli.values import Found, find_values, group_lines

LINE_KINDS = frozenset({"name", "address"})  # kinds of value judged by whole text lines

# What relevance reads itself: kinds that are no values of ``docvqa_cli.values`` (an email,
# a phone number, a postcode, a house number). Dates, times, amounts, percentages, ids and
# durations come from ``values.find_values``, the reader grounding uses.
_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "phone": re.compile(r"(?<![\w])\+?\(?\d[\d ()./-]{6,}\d(?!\w)"),
    "postcode": re.compile(r"(?<![\w-])\d{5,6}(?![\w-])|\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b|(?<![\w])[A-Z]-?\d{4,5}(?![\w])"),
    "house": re.compile(r"^\W*(?:no|lot|unit|suite|blk|block|ste|apt|flat)\.?\s*\d", re.I),
}


def value_kinds(found: Found) -> tuple[str, float] | None:
    """The kind a tile scorer looks for in a value of ``docvqa_cli.values``, and its strength:
    an amount with a currency 1.0, one with cents only 0.8; an id by how id-like it looks; a
    plain number is an id when it has four digits or more, and otherwise nothing."""
    kind = found.kind
    if kind == "amount":
        return "amount", (1.0 if found.value.symbol else 0.8)
    if kind in ("id", "number"):
        strength = _id_strength(found.value.text)
        return ("id", strength) if strength else None
    return kind, 1.0


@functools.lru_cache(maxsize=16384)
def _line_values(text: str) -> tuple[Found, ...]:
    """``values.find_values`` of one line, cached: running headers and footers repeat."""
    return tuple(find_values(text))


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


def analyse_page(words: Sequence[Word]) -> PageText:
    words = list(words)
    pat = _PATTERNS
    voc = vocabulary()
    toks = [list(word_tokens(w.text)) for w in words]
    # Lines: the engine's line numbers (text layer, OCR), ordered left to right.
    grouped = group_lines(words)
    lines = [_Line(list(g.indices), g.text, g.box, 0.0) for g in grouped]
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
    addr_hints = _ADDRESS_HINTS()
    for li, ln in enumerate(lines):
        ln.rank = li / n
        for i in ln.words:
            line_of[i] = li
        text = ln.text
        offsets = grouped[li].spans
        digits = sum(map(str.isdigit, text))
        has_digit = digits > 0
        for f in _line_values(text) if has_digit else ():
            kind = value_kinds(f)
            if kind:
                mark(ln.words, offsets, kind[0], kind[1], (f.start, f.end))
        for m in pat["email"].finditer(text) if "@" in text else ():
            mark(ln.words, offsets, "email", 1.0, m.span())
        for m in pat["phone"].finditer(text) if has_digit else ():
            if sum(map(str.isdigit, m.group())) >= 8:
                mark(ln.words, offsets, "phone", 0.8, m.span())
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


HOUSE_WORDS = frozenset(tokens("no lot unit suite blk block ste apt flat"))


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

