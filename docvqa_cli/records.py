"""The ``Answer`` record (one per document and question) and one writer per format."""

from __future__ import annotations

import json
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


KEYS = tuple(f.name for f in fields(Answer))


class JsonlWriter:
    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, record: Answer) -> None:
        self.stream.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def get_writer(fmt: str, stream: IO[str], **options):
    if fmt == "jsonl":
        return JsonlWriter(stream)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
