"""Question files of ``docq batch``: one question a line (ids q1, q2, ...), or JSONL / CSV
with id and question, and optionally the question's ``type`` (``options.TYPES``). A JSONL or
CSV file may also declare checks (a field file, for ``docq export --fields``): an entry with
``check`` and no question (``{"id": "sums", "check": "total = subtotal + tax",
"tolerance": 0.01}``); ``read_questions`` skips them and ``read_field_file`` returns them.
An unknown type, a duplicate id or an empty question is a usage error naming the line. A text
or JSONL file's lines end at \n, \r\n or \r only (U+0085, U+2028 and U+2029 stay inside a
question). In a CSV whose last column is ``question``, an unquoted comma stays in the question
(``q1,Total, with VAT?``); with columns after it, more fields than the header is a usage error
naming the line. See ARCHITECTURE.md."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field

from docvqa_cli.errors import UsageError
from docvqa_cli.options import TYPES


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    type: str | None = None  # given in the file (options.TYPES); None: inferred from the question
    line: int = field(default=0, compare=False)  # its line in the file (for messages)


@dataclass(frozen=True)
class CheckEntry:
    """A check as declared: ``expression`` (``checks`` parses it), ``tolerance`` or None."""

    id: str
    expression: str
    tolerance: str | None
    line: int


# Lines end only at \n, \r\n or \r: never at U+0085, U+2028, U+2029 or the other breaks that
# ``str.splitlines`` knows, which can sit inside a question and would shift later ids.
_LINE_END = re.compile(r"\r\n|\r|\n")


def _lines(content: str) -> list[str]:
    lines = _LINE_END.split(content)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_questions(path: str) -> list[Question]:
    """Questions from a text file (one a line, ids q1, q2, ...), or JSONL / CSV with id, question."""
    return read_field_file(path)[0]


def read_field_file(path: str) -> tuple[list[Question], list[CheckEntry]]:
    """The questions and the check entries of a question file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            content = fh.read()
    except OSError as exc:
        raise UsageError(f"QUESTIONS {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"QUESTIONS {path}: not UTF-8 text") from None
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        entries = _entries_jsonl(path, content)
    elif ext == ".csv":
        entries = _entries_csv(path, content)
    else:
        entries = [
            Question(f"q{n}", line.strip(), line=i)
            for n, (i, line) in enumerate(((i, l) for i, l in enumerate(_lines(content), 1) if l.strip()),
                                          start=1)
        ]
    questions = [e for e in entries if isinstance(e, Question)]
    if not questions:
        raise UsageError(f"QUESTIONS {path}: no questions in it")
    seen: dict[str, int] = {}
    for e in entries:
        where = f"QUESTIONS {path}:{e.line}"
        if not e.id:
            raise UsageError(f"{where}: an empty id")
        if isinstance(e, Question) and not e.text:
            raise UsageError(f"{where}: question {e.id} is empty")
        if e.id in seen:
            raise UsageError(f"{where}: the id {e.id!r} is used twice (first on line {seen[e.id]}); "
                             "ids must be unique")
        seen[e.id] = e.line
    return questions, [e for e in entries if isinstance(e, CheckEntry)]


def _entry(path: str, n: int, ident, question, kind, check, tolerance):
    where = f"QUESTIONS {path}:{n}"
    ident = str(ident if ident is not None else "").strip()
    check = str(check).strip() if check not in (None, "") else ""
    if check:
        if str(question or "").strip():
            raise UsageError(f"{where}: an entry is a question or a check, not both")
        tol = None if tolerance in (None, "") else str(tolerance).strip()
        return CheckEntry(ident, check, tol, n)
    return Question(ident, str(question if question is not None else "").strip(), check_type(kind, where), n)


def _entries_jsonl(path: str, content: str) -> list:
    out = []
    for n, line in enumerate(_lines(content), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"QUESTIONS {path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or "id" not in obj or ("question" not in obj and "check" not in obj):
            raise UsageError(f"QUESTIONS {path}:{n}: each line needs \"id\" and \"question\" (or \"check\")")
        kind = obj.get("type")
        out.append(_entry(path, n, obj["id"], obj.get("question"), None if kind is None else str(kind),
                          obj.get("check"), obj.get("tolerance")))
    return out


def _entries_csv(path: str, content: str) -> list:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "id" not in columns or "question" not in columns:
        raise UsageError(f"QUESTIONS {path}: the CSV needs a header with the columns id and question")
    reader.fieldnames = columns
    out = []
    for row in reader:
        extra = row.pop(None, None)  # fields beyond the header: an unquoted comma
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        if extra:
            if columns[-1] != "question":
                raise UsageError(f"QUESTIONS {path}:{reader.line_num}: more fields than the header has; "
                                 "put a question that holds a comma in double quotes")
            row["question"] = ",".join([row["question"] or "", *extra])
        out.append(_entry(path, reader.line_num, row.get("id"), row.get("question"), row.get("type"),
                          row.get("check"), row.get("tolerance")))
    return out


def check_type(name: str | None, where: str) -> str | None:
    """A question's type as given (lower case; empty is None), or a usage error naming
    ``where`` (the file and line)."""
    if name is None or not str(name).strip():
        return None
    kind = str(name).strip().lower()
    if kind not in TYPES:
        raise UsageError(f"{where}: unknown type {name!r}; use one of {', '.join(TYPES)}")
    return kind
