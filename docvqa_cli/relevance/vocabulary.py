"""Words as relevance sees them: tokens, their stems, and the field vocabulary.

``tokens(text)`` is the one normaliser for question and page words (lower case, no
punctuation, stemmed); ``vocabulary()`` is the field vocabulary of ``docvqa_cli/data/fields.json``
(as ``docvqa_cli.values`` loads it) in those tokens. Months and currencies are the values
package's own.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from docvqa_cli.values import fields_json

_TOKEN = re.compile(r"[^\W_]+|[#$€£¥₹%@]|n°|nº", re.UNICODE)
_CONFUSE = str.maketrans({"0": "o", "1": "l", "5": "s", "8": "b", "|": "l"})


@functools.lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer  # PyStemmer: the Snowball stemmers in C (the pure-Python port is ~70x slower)
    except ImportError:
        from docvqa_cli.errors import EnvironmentProblem

        raise EnvironmentProblem("tile selection needs PyStemmer: pip install PyStemmer") from None
    return Stemmer.Stemmer("english")


def _stem(tok: str) -> str:
    """A word's Snowball (Porter 2) English stem: "taxes" -> "tax", "governed" -> "govern".
    Tokens with digits or signs ("inv2024", "#") stay as they are."""
    if len(tok) > 2 and tok.isalpha():
        return _stemmer().stemWord(tok)
    return tok


_POSSESSIVE = re.compile(r"(?<=[^\W\d_])['’]s\b")


def _raw_tokens(text: str) -> list[str]:
    """Lower-case words and signs of ``text``; a possessive "'s" is no word of its own."""
    return _TOKEN.findall(_POSSESSIVE.sub("", text.lower()))


def tokens(text: str) -> list[str]:
    """Normalised tokens of ``text``: lower case, no punctuation, stemmed."""
    return [_stem(t) for t in _raw_tokens(text)]


def _deletions(tok: str) -> set[str]:
    return {tok[:i] + tok[i + 1:] for i in range(len(tok))}


@dataclass(frozen=True)
class Vocabulary:
    stopwords: frozenset
    synonyms: dict  # token tuple -> list of token tuples (its group)
    fields: dict  # name -> dict(ask, labels, types, where, hints) with token tuples
    name_suffixes: frozenset


@functools.lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """The field vocabulary of ``docvqa_cli/data/fields.json``, tokenised."""
    raw = fields_json()
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
        name_suffixes=frozenset(tuple(tokens(s)) for s in raw["name_suffixes"]),
    )



@functools.lru_cache(maxsize=65536)
def word_tokens(text: str) -> tuple[str, ...]:
    """``tokens(text)`` as a tuple, cached: the tokens of one page word."""
    return tuple(_stem(t) for t in _raw_tokens(text))
