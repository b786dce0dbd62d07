"""Question files of ``docq batch``: one question a line (ids q1, q2, ...), or JSONL / CSV
with id and question, and optionally the question's ``type`` (``typed.TYPES``; an unknown
type is a usage error naming the line). See ARCHITECTURE.md."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

from docvqa_cli.errors import UsageError
from docvqa_cli.options import TYPES


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    type: str | None = None  # given in the file (typed.TYPES); None: inferred from the question


def read_questions(path: str) -> list[Question]:
    """Questions from a text file (one a line, ids q1, q2, ...), or JSONL / CSV with id, question."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            content = fh.read()
    except OSError as exc:
        raise UsageError(f"QUESTIONS {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"QUESTIONS {path}: not UTF-8 text") from None
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        questions = _questions_jsonl(path, content)
    elif ext == ".csv":
        questions = _questions_csv(path, content)
    else:
        questions = [
            Question(f"q{n}", line.strip())
            for n, line in enumerate((l for l in content.splitlines() if l.strip()), start=1)
        ]
    if not questions:
        raise UsageError(f"QUESTIONS {path}: no questions in it")
    seen: set[str] = set()
    for q in questions:
        if not q.id:
            raise UsageError(f"QUESTIONS {path}: a question has an empty id")
        if not q.text:
            raise UsageError(f"QUESTIONS {path}: question {q.id} is empty")
        if q.id in seen:
            raise UsageError(f"QUESTIONS {path}: the id {q.id!r} is used twice; ids must be unique")
        seen.add(q.id)
    return questions


def _questions_jsonl(path: str, content: str) -> list[Question]:
    out = []
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"QUESTIONS {path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or "id" not in obj or "question" not in obj:
            raise UsageError(f"QUESTIONS {path}:{n}: each line needs \"id\" and \"question\"")
        kind = obj.get("type")
        out.append(Question(str(obj["id"]).strip(), str(obj["question"]).strip(),
                            check_type(None if kind is None else str(kind), f"QUESTIONS {path}:{n}")))
    return out


def _questions_csv(path: str, content: str) -> list[Question]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "id" not in columns or "question" not in columns:
        raise UsageError(f"QUESTIONS {path}: the CSV needs a header with the columns id and question")
    reader.fieldnames = columns
    out = []
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        kind = check_type(row.get("type"), f"QUESTIONS {path}:{reader.line_num}")
        out.append(Question((row.get("id") or "").strip(), (row.get("question") or "").strip(), kind))
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
