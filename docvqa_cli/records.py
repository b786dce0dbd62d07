"""The ``Answer`` record: one per document and question, its keys in ``KEYS`` order.

How records are written (jsonl, csv, table) is ``formats``' job; this module holds the
record itself, its boxes (``boxes_of``) and the check of an output path (``check_output``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from docvqa_cli.errors import ErrorKind


@dataclass
class Answer:
    """One record. Keys and their order are a contract (README, ARCHITECTURE.md)."""

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
    # Typed answers (``typed``): the question's type, the normalised value read from the page
    # (else from the answer), its ISO currency, where it was read, and why it is null.
    type: str | None = None
    value: Any = None
    currency: str | None = None
    value_source: str | None = None
    value_note: str | None = None

    # Not part of the record (never written): the kind of failure behind ``error``, for the
    # code that handles it (batch retries ``ErrorKind.out_of_memory``), instead of its text.
    failure: ErrorKind | None = field(default=None, compare=False, repr=False, metadata={"written": False})

    def set_typed(self, t) -> None:
        """Copy a ``typed.Typed`` into the record's typed keys."""
        self.type, self.value, self.currency, self.value_source, self.value_note = (
            t.type, t.value, t.currency, t.source, t.note)

    def to_dict(self) -> dict[str, Any]:
        """The record's keys (``KEYS``), in order."""
        return {k: v for k, v in asdict(self).items() if k in KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Answer":
        """A record read back from JSONL (unknown keys are ignored)."""
        return cls(**{k: data[k] for k in KEYS if k in data})


def record_text(text: str) -> str:
    """``text`` as it can be written (UTF-8): a file name's bytes that are not UTF-8 (Python
    holds them as surrogate escapes) become ``\\xNN`` (``bad\\xff.pdf``). The README documents
    it; resume compares documents by this name."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


def writable(answer: Answer) -> Answer:
    """``answer`` with every text key made writable (``record_text``); in place."""
    for f in fields(answer):
        value = getattr(answer, f.name)
        if isinstance(value, str) and f.metadata.get("written", True):
            setattr(answer, f.name, record_text(value))
    return answer


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


KEYS = tuple(f.name for f in fields(Answer) if f.metadata.get("written", True))


def boxes_of(match) -> list[dict[str, Any]]:
    """A ``grounding.Match`` as the record's ``boxes``: ``[{page, x0, y0, x1, y1}, ...]``."""
    if match is None:
        return []
    return [
        {"page": match.page, "x0": round(b[0], 2), "y0": round(b[1], 2), "x1": round(b[2], 2), "y1": round(b[3], 2)}
        for b in match.boxes
    ]
