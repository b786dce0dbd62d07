"""Values printed on documents, read once for everyone: dates, times, amounts, numbers,
percentages, ids and durations, the vocabulary they are written in, and the text lines of a
page. Relevance (what a tile holds) and grounding (whether the page prints the answer) use
this package; typed answers report its normalised values."""

from docvqa_cli.values.dates import find_dates, find_times, infer_date_order, parse_date, parse_time, resolve_dates
from docvqa_cli.values.durations import find_durations, parse_duration
from docvqa_cli.values.find import KINDS, Found, find_values, parse
from docvqa_cli.values.kinds import Amount, Date, Duration, Id, Number, Percent, Time, Value, same_value
from docvqa_cli.values.lines import Line, group_lines
from docvqa_cli.values.numbers import number_readings, parse_amount, parse_id, parse_number, parse_percent
from docvqa_cli.values.vocab import (CURRENCIES, CURRENCY_RE, MONTHS, NUMBER_WORDS, currency_code, field_labels,
                                     fields_json, month_number, words_to_int)

__all__ = [
    "find_dates", "find_times", "infer_date_order", "parse_date", "parse_time", "resolve_dates",
    "find_durations", "parse_duration", "KINDS", "Found", "find_values", "parse", "Line", "group_lines",
    "Amount", "Date", "Duration", "Id", "Number", "Percent", "Time", "Value", "same_value",
    "number_readings", "parse_amount", "parse_id", "parse_number", "parse_percent",
    "CURRENCIES", "CURRENCY_RE", "MONTHS", "NUMBER_WORDS", "currency_code", "field_labels", "fields_json",
    "month_number", "words_to_int",
]
