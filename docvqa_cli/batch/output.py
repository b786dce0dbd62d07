"""The output file of a batch job: locked, its torn tail repaired, what it holds read back
(``Done``), then appended to one whole record at a time; or a stream (stdout).

Durability. Each record is serialised in full and handed to the kernel in one ``os.write``
on a file opened for appending, so a process killed at any instant (SIGKILL included)
leaves whole records plus, at worst, one torn last line; the next run truncates the file
back to its last complete record before appending. Records are in the page cache the
moment ``write`` returns, so a killed *process* loses nothing. ``os.fsync`` only matters
for a power cut or a kernel crash; it is called at most once a second while records flow
and at the end, so such a crash loses at most the last second of answers, which the next
run answers again (a per-record fsync costs ~2 ms here, a real cost next to a tiny model
and no gain against SIGKILL).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import IO

from docvqa_cli import records
from docvqa_cli.documents import sniff
from docvqa_cli.errors import UsageError

OUTPUT_FORMATS = ("jsonl", "csv")
FSYNC_INTERVAL_S = 1.0


@dataclass
class Done:
    """What an output file already holds: question text and whether it failed, per pair."""

    pairs: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    repaired_bytes: int = 0  # bytes cut from a torn tail
    bad_lines: int = 0  # unreadable complete lines (left in place, their pairs redone)


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


def scan_jsonl(data: bytes) -> tuple[int, list[dict], int]:
    """(length of the valid prefix, its records, unreadable lines inside it)."""
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




def scan_csv(data: bytes) -> tuple[int, list[dict], int]:
    """(length of the valid prefix, its records as dicts, unreadable rows inside it).

    A record is complete when it ends in a newline, its quotes are balanced and it has as
    many fields as the header; a header without a record is a valid prefix.
    """
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
    keep = [spans[0]]
    for raw, row in spans[1:]:
        keep.append((raw, row))
    # Cut incomplete rows from the end (torn: unbalanced quotes or too few fields).
    while len(keep) > 1 and (keep[-1][0].count('"') % 2 or len(keep[-1][1]) != len(header)):
        keep.pop()
    valid = sum(len(raw.encode("utf-8", errors="surrogateescape")) for raw, _ in keep)
    rows, bad = [], 0
    for raw, row in keep[1:]:
        if len(row) != len(header):
            bad += 1
            continue
        rows.append({k: records.unguard_cell(v) for k, v in zip(header, row)})
    if "doc" not in header or "question_id" not in header:
        raise UsageError("the output CSV has no doc and question_id columns")
    return valid, rows, bad


class Output:
    """An output file opened for resuming: locked, repaired, read, then appended to."""

    def __init__(self, path: str, fmt: str, overwrite: bool = False):
        self.path = path
        self.fmt = fmt
        self.records_written = 0
        self._last_sync = time.monotonic()
        created = not os.path.exists(path)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"-o {path}: cannot open it for writing ({exc.strerror or exc})") from None
        try:
            self._lock()
            self.done = Done()
            if overwrite:
                os.ftruncate(self.fd, 0)
            else:
                self.done = self._read_and_repair()
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            if created:
                _fsync_dir(path)
        except BaseException:
            os.close(self.fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"-o {self.path}: another docq batch is writing this file; wait for it or use another -o"
            ) from None

    def _read_and_repair(self) -> Done:
        chunks = []
        os.lseek(self.fd, 0, os.SEEK_SET)
        while True:
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        head = data.lstrip()[:1]
        if head and sniff(data) is not None:
            raise UsageError(f"-o {self.path}: is a document, not a file of records; give another -o")
        if head:
            if self.fmt == "jsonl" and head != b"{":
                raise UsageError(f"-o {self.path}: not a JSONL file of records; use --format csv, --overwrite or another -o")
            if self.fmt == "csv" and head == b"{":
                raise UsageError(f"-o {self.path}: holds JSONL records; use --format jsonl, --overwrite or another -o")
        try:
            valid, rows, bad = (scan_jsonl if self.fmt == "jsonl" else scan_csv)(data)
        except UsageError as exc:
            raise UsageError(f"-o {self.path}: {exc}; use --overwrite or another -o") from None
        done = Done(repaired_bytes=len(data) - valid, bad_lines=bad)
        if valid < len(data):
            os.ftruncate(self.fd, valid)
            os.fsync(self.fd)
        for row in rows:
            err = row.get("error")
            done.pairs[(str(row["doc"]), str(row["question_id"]))] = (
                str(row.get("question") or ""),
                bool(err) and err != "null",
            )
        return done

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:  # one write in practice; the loop covers a short write
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL_S:
            os.fsync(self.fd)
            self._last_sync = now

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StreamOutput:
    """Records to a text stream (stdout): nothing to resume, flushed per record."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.done = Done()
        self.size = 0

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self.size += len(text)

    def close(self) -> None:
        self.stream.flush()


# --- record serialisation (through records.py's writers) ---------------------------------

class Serialiser:
    """One record to the exact text appended for it, and the CSV header once."""

    def __init__(self, fmt: str, **options):
        self.fmt = fmt
        self.options = options
        self.header: str | None = None

    def record(self, answer: records.Answer) -> str:
        buf = io.StringIO()
        writer = records.get_writer(self.fmt, buf, **self.options)
        writer.write(answer)
        writer.close()
        text = buf.getvalue()
        if self.fmt == "csv":
            first, sep, rest = text.partition("\n")
            cells = first.rstrip("\r").split(",")
            if sep and cells[:2] == ["doc", "question_id"]:
                self.header = first + sep
                text = rest
        return text
