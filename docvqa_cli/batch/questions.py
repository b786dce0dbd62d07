"""Question files of ``docq batch``: one question a line (ids q1, q2, ...), or JSONL / CSV
with id and question. See ARCHITECTURE.md."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

from docvqa_cli.errors import UsageError


@dataclass(frozen=True)
class Question:
    id: str
    text: str


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
        out.append(Question(str(obj["id"]).strip(), str(obj["question"]).strip()))
    return out


def _questions_csv(path: str, content: str) -> list[Question]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "id" not in columns or "question" not in columns:
        raise UsageError(f"QUESTIONS {path}: the CSV needs a header with the columns id and question")
    reader.fieldnames = columns
    return [
        Question((row.get("id") or "").strip(), (row.get("question") or "").strip())
        for row in reader
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]
