"""The ``Answer`` record (one per document and question) and one writer per format.

- ``jsonl``: one JSON object a line, keys in ``KEYS`` order, UTF-8 (non-Latin text as is).
- ``csv``: RFC 4180 (CRLF line ends, quotes where needed), a header row, the columns of
  ``CSV_COLUMNS``: the record's keys with the first box flattened to ``x0,y0,x1,y1`` after
  ``page``, and every box as JSON in ``boxes``. A text cell that a spreadsheet would run as
  a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a CR) gets a leading ``'``,
  unless it is a plain number such as ``-11.80``; ``csv_raw=True`` (``--csv-raw``) turns
  the guard off. ``csv_bom=True`` (``--bom``) starts the file with a UTF-8 byte-order mark,
  which Excel on Windows needs to read UTF-8 (without it, "Café" shows as "CafÃ©").
- ``table``: a rich table for a terminal, printed when the writer is closed.

Writers take a text stream; records go there and nowhere else.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any

FORMATS = ("jsonl", "csv", "table")


@dataclass
class Answer:
    """One record. Keys and their order are a contract (DESIGN.md, README)."""

    doc: str
    question_id: str
    question: str
    answer: str = ""
    confidence: float | None = None
    page: int | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)  # {page, x0, y0, x1, y1}
    tiles_kept: int = 0
    tiles_total: int = 0
    model: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Answer":
        """A record read back from JSONL (unknown keys are ignored)."""
        return cls(**{k: data[k] for k in KEYS if k in data})


def check_output(path: str, flag: str, inputs=()) -> None:
    """Refuse, before any work, an output that would destroy an input or cannot be written:
    ``path`` is one of ``inputs`` (documents, the question file), its folder is missing, or it
    is a folder. The message names the flag."""
    from docvqa_cli.errors import UsageError

    real = os.path.realpath(path)
    for given in inputs:
        if given and given != "-" and os.path.realpath(given) == real:
            raise UsageError(f"{flag} {path}: is an input ({given}); docq will not overwrite it, give another file")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: the folder {os.path.dirname(path) or folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in {os.path.dirname(path) or folder}")


def format_for(path: str | None, fmt: str | None) -> str:
    """--format if given, else csv for an output file ending in .csv, else jsonl."""
    if fmt:
        return fmt
    return "csv" if path and path.lower().endswith(".csv") else "jsonl"


KEYS = tuple(f.name for f in fields(Answer))
BOX_KEYS = ("page", "x0", "y0", "x1", "y1")
CSV_COLUMNS = KEYS[: KEYS.index("page") + 1] + ("x0", "y0", "x1", "y1") + KEYS[KEYS.index("page") + 1:]


def boxes_of(match) -> list[dict[str, Any]]:
    """A ``grounding.Match`` as the record's ``boxes``: ``[{page, x0, y0, x1, y1}, ...]``."""
    if match is None:
        return []
    return [
        {"page": match.page, "x0": round(b[0], 2), "y0": round(b[1], 2), "x1": round(b[2], 2), "y1": round(b[3], 2)}
        for b in match.boxes
    ]


class Writer:
    """Base class: ``write`` each record, then ``close`` (also a context manager)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, record: Answer) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlWriter(Writer):
    def write(self, record: Answer) -> None:
        self.stream.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        self.stream.flush()


# A cell a spreadsheet would take as a plain number, never as a formula.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard_cell(value: str) -> str:
    """Neutralise a cell that a spreadsheet would run as a formula (OWASP CSV injection)."""
    if value.startswith(_FORMULA_START) and not (
        _PLAIN_NUMBER.fullmatch(value) and any(ch.isdigit() for ch in value)
    ):
        return "'" + value
    return value


def unguard_cell(value: str) -> str:
    """Undo ``guard_cell`` on a cell read back (resuming from a CSV docq wrote)."""
    if value.startswith("'") and value[1:2] and value[1] in _FORMULA_START:
        return value[1:]
    return value


class CsvWriter(Writer):
    """RFC 4180 CSV with a header row; ``raw=True`` turns off the formula guard."""

    def __init__(self, stream: IO[str], raw: bool = False, header: bool = True, bom: bool = False):
        super().__init__(stream)
        self.raw = raw
        self.bom = bom and header  # the mark goes before the header, at the very start
        self.writer = csv.writer(stream, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self.header_written = not header

    def _cell(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return value if self.raw else guard_cell(value)
        return value

    def write(self, record: Answer) -> None:
        if not self.header_written:
            if self.bom:
                self.stream.write("\ufeff")
            self.writer.writerow(CSV_COLUMNS)
            self.header_written = True
        row = record.to_dict()
        first = row["boxes"][0] if row["boxes"] else {}
        row.update({k: first.get(k) for k in ("x0", "y0", "x1", "y1")})
        row["boxes"] = json.dumps(row["boxes"], ensure_ascii=False, separators=(",", ":"))
        self.writer.writerow([self._cell(row[k]) if k != "boxes" else row[k] for k in CSV_COLUMNS])
        self.stream.flush()


class TableWriter(Writer):
    """A rich table (document, question, answer, confidence, page and box, error)."""

    def __init__(self, stream: IO[str], console=None):
        super().__init__(stream)
        self.records: list[Answer] = []
        self.console = console

    def write(self, record: Answer) -> None:
        self.records.append(record)

    def close(self) -> None:
        from rich.console import Console
        from rich.table import Table

        console = self.console
        if console is None:
            tty = hasattr(self.stream, "isatty") and self.stream.isatty()
            # Piped to a file or a pager, a table is wide rather than folded at 80 columns.
            console = Console(file=self.stream, no_color=bool(os.environ.get("NO_COLOR")) or not tty,
                              highlight=False, soft_wrap=False, width=None if tty else 200)
        table = Table(show_lines=False)
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


def get_writer(fmt: str, stream: IO[str], **options) -> Writer:
    """The writer for ``fmt``. Options: ``csv_raw`` (no formula guard), ``csv_header``
    (False when appending to a CSV that has one) and ``csv_bom`` (a UTF-8 byte-order mark
    first, for Excel) for csv, ``console`` (a rich Console) for
    table; others are refused so a misspelt option does not pass silently."""
    unknown = set(options) - {"csv_raw", "csv_header", "csv_bom", "console"}
    if unknown:
        raise TypeError(f"get_writer: unknown option(s) {', '.join(sorted(unknown))}")
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, raw=bool(options.get("csv_raw")), header=options.get("csv_header", True),
                         bom=bool(options.get("csv_bom")))
    if fmt == "table":
        return TableWriter(stream, console=options.get("console"))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
