"""Output formats: one object per format, in one registry, used by ``docq ask`` and ``docq batch``.

A format knows how a record (``records.Answer``) becomes text, what a file of it starts with,
and, when it is ``resumable``, how such a file is read back (``scan``) so that batch can
repair a torn tail and skip the pairs it holds.

- ``jsonl``: one JSON object a line, keys in ``records.KEYS`` order, UTF-8 (non-Latin text
  as is). Resumable.
- ``csv``: RFC 4180 (CRLF line ends, quotes where needed), a header row, the columns of
  ``CSV_COLUMNS``: the record's keys with the first box flattened to ``x0,y0,x1,y1`` after
  ``page``, and every box as JSON in ``boxes``. A text cell that a spreadsheet would run as
  a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a CR) gets a leading ``'``,
  unless it is a plain number such as ``-11.80``, and so does a cell that starts with ``'``
  then such a character (``'=x.pdf`` is written ``''=x.pdf``), so that a resume reads back
  exactly what was given; ``csv_raw=True`` (``--csv-raw``) turns
  the guard off. ``csv_bom=True`` (``--bom``) starts the file with a UTF-8 byte-order mark,
  which Excel on Windows needs to read UTF-8 (without it "Café" shows as "CafÃ©"); scanning
  a file back skips it. Resumable.
- ``table``: a rich table for a terminal, printed when the writer is closed. Not resumable.

Adding a format: a ``Format`` subclass here and its name in ``_REGISTRY``; the ``--format``
choices of every command come from ``names()`` (see ARCHITECTURE.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import IO, Any

from docvqa_cli.records import KEYS, Answer

CSV_COLUMNS = KEYS[: KEYS.index("page") + 1] + ("x0", "y0", "x1", "y1") + KEYS[KEYS.index("page") + 1:]


class Format:
    """One output format. ``record`` is the exact text of one record, ``header`` what a file
    starts with (written before its first record); ``writer`` writes records to a stream."""

    name = ""
    resumable = False  # batch -o can repair, resume and append to a file of it
    options: tuple[str, ...] = ()  # the keyword options of ``get`` this format takes

    def __init__(self, **options):
        for key in self.options:
            setattr(self, key, options.get(key))

    def header(self) -> str:
        return ""

    def record(self, answer: Answer) -> str:
        raise NotImplementedError

    def writer(self, stream: IO[str]) -> "Writer":
        return Writer(self, stream)

    def refuse(self, head: bytes) -> str | None:
        """Why a file whose first byte is ``head`` cannot hold this format (None: it can)."""
        return None

    def scan(self, data: bytes) -> tuple[int, list[dict], int]:
        """(length of the valid prefix of ``data``, its records as dicts, unreadable records
        inside it); a torn tail is not in the valid prefix. Resumable formats only."""
        raise NotImplementedError


class Writer:
    """Records to a text stream: the header before the first, each one flushed; also a
    context manager."""

    def __init__(self, fmt: Format, stream: IO[str]):
        self.format = fmt
        self.stream = stream
        self.started = False

    def write(self, record: Answer) -> None:
        text = self.format.record(record)
        if not self.started:
            text = self.format.header() + text
            self.started = True
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- jsonl -------------------------------------------------------------------------------------

def _split_lines(data: bytes) -> list[bytes]:
    """Complete lines (each ending in \\n) of ``data``; a tail without \\n is left out."""
    lines = data.split(b"\n")
    return [line + b"\n" for line in lines[:-1]]


def _jsonl_record(line: bytes) -> dict | None:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(obj, dict) and "doc" in obj and "question_id" in obj:
        return obj
    return None


class Jsonl(Format):
    name = "jsonl"
    resumable = True

    def record(self, answer: Answer) -> str:
        return json.dumps(answer.to_dict(), ensure_ascii=False) + "\n"

    def refuse(self, head: bytes) -> str | None:
        return None if head == b"{" else "not a JSONL file of records; use --format csv, --overwrite or another -o"

    def scan(self, data: bytes) -> tuple[int, list[dict], int]:
        lines = _split_lines(data)
        parsed = [_jsonl_record(line) for line in lines]
        # Unreadable lines at the very end are what a crash leaves (a torn or zero-filled
        # tail): cut them. Unreadable lines further up are left alone and reported.
        while parsed and parsed[-1] is None:
            parsed.pop()
            lines.pop()
        valid = sum(len(line) for line in lines)
        good = [p for p in parsed if p is not None]
        return valid, good, len(parsed) - len(good)


# --- csv ---------------------------------------------------------------------------------------

# A cell a spreadsheet would take as a plain number, never as a formula.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Quotes then a formula character: what ``unguard_cell`` strips one quote from, so a value that
# already looks like this (a document named ``'=x.pdf``) gets one more quote and reads back whole.
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")


def guard_cell(value: str) -> str:
    """Neutralise a cell that a spreadsheet would run as a formula (OWASP CSV injection)."""
    if _QUOTED_FORMULA.match(value) or value.startswith(_FORMULA_START) and not (
        _PLAIN_NUMBER.fullmatch(value) and any(ch.isdigit() for ch in value)
    ):
        return "'" + value
    return value


def unguard_cell(value: str) -> str:
    """Undo ``guard_cell`` on a cell read back (resuming from a CSV docq wrote)."""
    if _QUOTED_FORMULA.match(value):
        return value[1:]
    return value


def _csv_line(cells: list) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerow(cells)
    return buf.getvalue()


csv_line = _csv_line  # one CSV row as text (``export``'s wide table writes rows the same way)


class Csv(Format):
    """RFC 4180 CSV with a header row; ``csv_raw=True`` turns off the formula guard,
    ``csv_bom=True`` puts a UTF-8 byte-order mark before the header."""

    name = "csv"
    resumable = True
    options = ("csv_raw", "csv_bom")

    def _cell(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return value if self.csv_raw else guard_cell(value)
        return value

    def header(self) -> str:
        return ("\ufeff" if self.csv_bom else "") + _csv_line(list(CSV_COLUMNS))

    def record(self, answer: Answer) -> str:
        row = answer.to_dict()
        first = row["boxes"][0] if row["boxes"] else {}
        row.update({k: first.get(k) for k in ("x0", "y0", "x1", "y1")})
        row["boxes"] = json.dumps(row["boxes"], ensure_ascii=False, separators=(",", ":"))
        return _csv_line([self._cell(row[k]) if k != "boxes" else row[k] for k in CSV_COLUMNS])

    def refuse(self, head: bytes) -> str | None:
        return "holds JSONL records; use --format jsonl, --overwrite or another -o" if head == b"{" else None

    def scan(self, data: bytes) -> tuple[int, list[dict], int]:
        """A record is complete when it ends in a newline, its quotes are balanced and it has
        as many fields as the header; a header without a record is a valid prefix."""
        from docvqa_cli.errors import UsageError

        text = data.decode("utf-8", errors="surrogateescape")
        chunks = [c + "\n" for c in text.split("\n")[:-1]]
        consumed = []  # raw text of each record, as the csv reader pulled it

        def feed():
            for chunk in chunks:
                consumed[-1].append(chunk)
                yield chunk

        spans: list[tuple[str, list[str]]] = []
        reader = csv.reader(feed())
        while True:
            consumed.append([])
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                break
            spans.append(("".join(consumed[-1]), row))
        if not spans:
            return 0, [], 0
        header_raw, header = spans[0]
        if header_raw.count('"') % 2:
            return 0, [], 0
        header = [header[0].removeprefix("\ufeff"), *header[1:]]  # a file written with --bom
        keep = list(spans)
        # Cut incomplete rows from the end (torn: unbalanced quotes or too few fields).
        while len(keep) > 1 and (keep[-1][0].count('"') % 2 or len(keep[-1][1]) != len(header)):
            keep.pop()
        valid = sum(len(raw.encode("utf-8", errors="surrogateescape")) for raw, _ in keep)
        rows, bad = [], 0
        for raw, row in keep[1:]:
            if len(row) != len(header):
                bad += 1
                continue
            rows.append({k: v if self.csv_raw else unguard_cell(v) for k, v in zip(header, row)})
        if "doc" not in header or "question_id" not in header:
            raise UsageError("the output CSV has no doc and question_id columns")
        return valid, rows, bad


# --- table -------------------------------------------------------------------------------------

class Table(Format):
    """A rich table (document, question, answer, confidence, page and box, error)."""

    name = "table"
    options = ("console",)

    def writer(self, stream: IO[str]) -> "TableWriter":
        return TableWriter(self, stream)


class TableWriter(Writer):
    def __init__(self, fmt: Table, stream: IO[str]):
        super().__init__(fmt, stream)
        self.records: list[Answer] = []

    def write(self, record: Answer) -> None:
        self.records.append(record)

    def close(self) -> None:
        from rich.console import Console
        from rich.table import Table as RichTable

        console = self.format.console
        if console is None:
            tty = hasattr(self.stream, "isatty") and self.stream.isatty()
            # Piped to a file or a pager, a table is wide rather than folded at 80 columns.
            console = Console(file=self.stream, no_color=bool(os.environ.get("NO_COLOR")) or not tty,
                              highlight=False, soft_wrap=False, width=None if tty else 200)
        table = RichTable(show_lines=False)
        for name, style in (("doc", "dim"), ("question", None), ("answer", "bold"), ("conf", None),
                            ("page", None), ("box (x0,y0,x1,y1)", "dim"), ("error", "red")):
            table.add_column(name, style=style, overflow="fold")
        for r in self.records:
            box = r.boxes[0] if r.boxes else None
            table.add_row(
                r.doc,
                r.question,
                r.answer,
                "" if r.confidence is None else f"{r.confidence:.2f}",
                "" if r.page is None else str(r.page),
                "" if box is None else ",".join(f"{box[k]:.0f}" for k in ("x0", "y0", "x1", "y1"))
                + (f" (+{len(r.boxes) - 1})" if len(r.boxes) > 1 else ""),
                r.error or "",
                style="red" if r.error else None,
            )
        console.print(table)
        self.stream.flush()


# --- the registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Format]] = {f.name: f for f in (Jsonl, Csv, Table)}


def names(resumable: bool = False) -> tuple[str, ...]:
    """The format names, for ``--format`` (``resumable``: only those batch -o can append to)."""
    return tuple(n for n, f in _REGISTRY.items() if f.resumable or not resumable)


def get(name: str, **options) -> Format:
    """The format ``name`` with its options (``csv_raw``: no formula guard, ``csv_bom``: a
    byte-order mark first, for csv;
    ``console``: a rich Console, for table; each format takes its own and ignores the
    others'); a misspelt option is a TypeError."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(_REGISTRY)}")
    unknown = set(options) - {o for f in _REGISTRY.values() for o in f.options}
    if unknown:
        raise TypeError(f"formats.get: unknown option(s) {', '.join(sorted(unknown))}")
    return _REGISTRY[name](**options)


def for_output(path: str | None, name: str | None) -> str:
    """--format if given, else csv for an output file ending in .csv, else jsonl."""
    if name:
        return name
    return "csv" if path and path.lower().endswith(".csv") else "jsonl"
