"""One row per document: records (JSONL or CSV, possibly from a killed and resumed batch)
turned into a wide table, one column per question id.

``read_records(path)`` reads records as a batch resume does (``formats``' ``scan``: a torn
last line is left out) and keeps one record per (document, question id): the last one
without an error, else the last one. ``wide(records, fields)`` builds the table: ``doc``,
then per question id its cell (the record's ``value``; its ``answer`` when the type is
``text`` or unknown; empty when the value could not be read: never a guess), then
``<id>_page`` and ``<id>_confidence`` (and ``<id>_currency`` for an amount), then one
``check_<id>`` column per check of the field file (``checks``): a flag, never a changed value.
``write_csv`` writes it with the records' CSV rules (formula guard, optional BOM), all at
once: a table is complete or not written.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal

from docvqa_cli import formats
from docvqa_cli.errors import UsageError


def read_records(path: str) -> list[dict]:
    """The records of a JSONL or CSV file docq wrote, one per (doc, question id), in the order
    each pair first appears."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"RECORDS {path}: cannot read it ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    head = data.lstrip()[:1]
    if not head:
        raise UsageError(f"RECORDS {path}: empty; give the -o file of docq batch or ask")
    fmt = formats.get("jsonl" if head == b"{" else "csv")
    _, rows, bad = fmt.scan(data)
    if not rows:
        raise UsageError(f"RECORDS {path}: no records in it (a JSONL or CSV file written by docq batch or ask)")
    if bad:
        raise UsageError(f"RECORDS {path}: {bad} unreadable record(s) before the end; fix or remove them")
    best: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (str(row.get("doc")), str(row.get("question_id")))
        old = best.get(key)
        if old is None or not row.get("error") or old.get("error"):
            best[key] = row
    return list(best.values())


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]


def _number(text):
    """A CSV cell back as a number where it was one (CSV records hold text)."""
    if isinstance(text, str) and text.strip():
        try:
            d = Decimal(text)
        except ArithmeticError:
            return text
        return int(d) if d == d.to_integral_value() and "." not in text else float(d)
    return text


def cell(record: dict | None):
    """A question's cell: its value, or its answer when the type is text (or not recorded)."""
    if record is None or record.get("error"):
        return None
    kind = record.get("type") or "text"
    if kind == "text":
        return record.get("answer")
    value = record.get("value")
    return None if value in ("", None) else value


def wide(records: list[dict], question_ids: list[str] | None = None, checks=(), types: dict | None = None) -> Table:
    """The wide table of ``records``: one row per document (first-seen order), columns for
    ``question_ids`` (default: every id, first-seen order) and a flag per check."""
    docs: dict[str, dict[str, dict]] = {}
    ids: list[str] = list(question_ids or [])
    for r in records:
        docs.setdefault(str(r.get("doc")), {})[str(r.get("question_id"))] = r
        if question_ids is None and str(r.get("question_id")) not in ids:
            ids.append(str(r.get("question_id")))
    types = dict(types or {})
    for r in records:
        types.setdefault(str(r.get("question_id")), r.get("type") or None)
    columns = ["doc"]
    for q in ids:
        columns += [q, f"{q}_page", f"{q}_confidence"] + ([f"{q}_currency"] if types.get(q) == "amount" else [])
    columns += [f"check_{c.id}" for c in checks]
    rows = []
    for doc, by_id in docs.items():
        row: list = [doc]
        values = {}
        for q in ids:
            r = by_id.get(q)
            v = cell(r)
            values[q] = v
            row += [v, _number(r.get("page")) if r else None, _number(r.get("confidence")) if r else None]
            if types.get(q) == "amount":
                row.append((r or {}).get("currency") or None)
        for c in checks:
            row.append(c.flag(values))
        rows.append(tuple(row))
    return Table(tuple(columns), tuple(rows))


def render_csv(table: Table, raw: bool = False, bom: bool = False) -> str:
    """The table as RFC 4180 CSV with the records' formula guard (unless ``raw``)."""
    def out(v):
        if v is None:
            return ""
        if isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False)
        if isinstance(v, str) and not raw:
            return formats.guard_cell(v)
        return v

    buf = io.StringIO(newline="")
    if bom:
        buf.write("\ufeff")
    buf.write(formats.csv_line(list(table.columns)))
    for row in table.rows:
        buf.write(formats.csv_line([out(v) for v in row]))
    return buf.getvalue()


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole: a temporary file beside it, then renamed over it."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".docq-export-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
