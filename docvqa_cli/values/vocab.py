"""The one vocabulary of values: month names, currency signs and codes, number words, and
the field vocabulary of ``data/fields.json`` (labels, synonyms, stopwords) as loaded once.

Every parser in this package and every scorer that looks for a kind of value reads its
words from here, so that what counts as a month or a currency is written once.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources

# Month names and abbreviations: English, German, French, Spanish, Italian, Portuguese,
# Dutch, Malay and Indonesian (the languages of the dev documents and their neighbours).
_MONTH_NAMES = [
    "jan january januar jänner janvier janv enero ene gennaio gen januari janeiro",
    "feb february februar fevrier février fevr févr febrero febbraio februari fevereiro fev",
    "mar march märz maerz marz mär mars marzo maart mrt marco março mac maret",
    "apr april avril avr abril abr aprile",
    "may mai mayo maggio mag mei maio",
    "jun june juni juin junio giugno giu junho",
    "jul july juli juillet juil julio luglio lug julai julho",
    "aug august aout août agosto ago augustus ogos agustus agt",
    "sep sept september septembre septiembre settembre set setembro",
    "oct october oktober okt octobre octubre ottobre ott outubro out",
    "nov november novembre noviembre novembro nop",
    "dec december dezember dez décembre decembre diciembre dic dicembre dis disember desember dezembro des",
]
MONTHS: dict[str, int] = {
    name: n for n, names in enumerate(_MONTH_NAMES, start=1) for name in names.split()
}
# Names of four letters or more: a dotted abbreviation of one ("Sept.", "Febr.") is a month too.
_LONG_MONTHS = sorted((name for name in MONTHS if len(name) >= 4), key=len)


def month_number(name: str) -> int | None:
    """1 to 12 for a month name or abbreviation in any listed language, else None."""
    key = unicodedata.normalize("NFC", name.casefold().strip().rstrip("."))
    if key in MONTHS:
        return MONTHS[key]
    if len(key) >= 3:
        for full in _LONG_MONTHS:
            if full.startswith(key):
                return MONTHS[full]
    return None


# Currency signs and codes as printed -> ISO 4217 code, or None where the sign alone does not
# say which currency ("$" is used by a dozen of them; docq does not guess).
CURRENCIES: dict[str, str | None] = {
    "$": None, "€": "EUR", "£": "GBP", "¥": None, "₹": "INR", "₩": "KRW", "₽": "RUB", "฿": "THB",
    "₫": "VND", "₱": "PHP", "₦": "NGN", "₪": "ILS", "₺": "TRY", "¢": None,
    "us$": "USD", "u$s": "USD", "s$": "SGD", "hk$": "HKD", "a$": "AUD", "au$": "AUD", "c$": "CAD",
    "ca$": "CAD", "nz$": "NZD", "r$": "BRL", "mx$": "MXN",
    "rm": "MYR", "rs": None, "rs.": None, "rp": "IDR", "kr": None, "fr": None, "sfr": "CHF",
    "dm": "DEM", "rmb": "CNY", "dh": None, "dhs": None, "ksh": "KES", "kshs": "KES",
    "dollar": None, "dollars": None, "euro": "EUR", "euros": "EUR", "yuan": "CNY", "yen": "JPY",
    "rupees": None, "ringgit": "MYR",
}
for _code in (
    "usd eur gbp jpy cny inr myr sgd aud cad chf hkd nzd sek nok dkk pln czk huf idr thb php vnd "
    "krw zar brl mxn rub try aed sar mad egp ngn kes ghs tzs ugx pkr lkr bdt npr ils qar kwd bhd "
    "omr jod twd ars clp cop pen uah ron bgn isk"
).split():
    CURRENCIES[_code] = _code.upper()

# Printed forms, longest first, as one regular expression (letters must not run on).
CURRENCY_RE = re.compile(
    "|".join(
        re.escape(c) if not c[0].isalpha() else r"(?<![^\W\d_])" + re.escape(c) + r"(?![^\W\d_])"
        for c in sorted(CURRENCIES, key=len, reverse=True)
    ),
    re.IGNORECASE,
)
CURRENCY_SIGNS = "".join(c for c in CURRENCIES if len(c) == 1)


def currency_code(printed: str) -> str | None:
    """The ISO 4217 code of a printed sign or code (None when unknown or not unique)."""
    return CURRENCIES.get(printed.strip().casefold())


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
NUMBER_WORDS.update({"a": 1, "an": 1, "single": 1, "hundred": 100})
NUMBER_WORD_RE = (
    r"(?:(?:%s)(?:[\s-]+hundred)?(?:[\s-]+(?:and[\s-]+)?)?)?(?:%s)(?:[\s-]+(?:%s))?"
    % ("|".join(_UNITS[1:]), "|".join(_TENS + _UNITS[1:][::-1]), "|".join(_UNITS[1:10]))
)


def words_to_int(text: str) -> int | None:
    """``"thirty"`` -> 30, ``"twenty-four"`` -> 24, ``"one hundred twenty"`` -> 120."""
    total, current = 0, 0
    parts = [p for p in re.split(r"[\s-]+", text.casefold().strip()) if p and p != "and"]
    if not parts:
        return None
    for p in parts:
        if p == "hundred":
            current = max(current, 1) * 100
        elif p in NUMBER_WORDS:
            current += NUMBER_WORDS[p]
        else:
            return None
    return total + current


@functools.lru_cache(maxsize=1)
def fields_json() -> dict:
    """``docvqa_cli/data/fields.json`` as loaded (stopwords, synonyms, fields, ...), once."""
    return json.loads(resources.files("docvqa_cli").joinpath("data/fields.json").read_text("utf-8"))


def field_labels() -> dict[str, list[str]]:
    """Field name -> the labels documents print next to its value (strong labels first)."""
    raw = fields_json()["fields"]
    return {name: list(spec.get("labels", [])) + list(spec.get("weak_labels", [])) for name, spec in raw.items()}
