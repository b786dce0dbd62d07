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

import os
import stat
import time
from dataclasses import dataclass, field
from typing import IO

from docvqa_cli import records
from docvqa_cli.errors import JobIncomplete, UsageError
from docvqa_cli.formats import Format
from docvqa_cli.reading.documents import sniff

FSYNC_INTERVAL_S = 1.0
MIN_FREE_BYTES = 1 << 20  # -o's folder must have this much free space before the model loads


def check_target(path: str, flag: str = "-o") -> None:
    """Refuse, before any work, an output file docq cannot append to and resume from: a pipe,
    a terminal or a device (``/dev/stdout``, a FIFO), or one in a folder with under
    ``MIN_FREE_BYTES`` free."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{flag} {path}: is not a regular file (a pipe, terminal or device); docq batch appends "
                         f"to a file and resumes from it: give a file name, or leave {flag} out to write to stdout")
    folder = os.path.dirname(os.path.realpath(path)) or "."
    try:
        vfs = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (not POSIX): not checked
        return
    free = vfs.f_bavail * vfs.f_frsize
    if free < MIN_FREE_BYTES:
        raise UsageError(f"{flag} {path}: only {free // 1024} KB free in {folder}; free some space or give "
                         "another -o")


def _write_failed(where: str, exc: OSError, written: int, resumable: bool) -> JobIncomplete:
    safe = ("the records already in it are safe (a torn last line is cut by the next run)" if resumable
            else f"the {written} record(s) written before are safe")
    how = ("fix that (e.g. free some space) and run the same command again to resume" if resumable
           else "use -o FILE to be able to resume")
    return JobIncomplete(f"{where}: cannot write ({exc.strerror or exc}); the job stopped; {safe}; {how}")


@dataclass
class Done:
    """What an output file already holds: question text and whether it failed, per pair."""

    pairs: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    repaired_bytes: int = 0  # bytes cut from a torn tail
    bad_lines: int = 0  # unreadable complete lines (left in place, their pairs redone)


class _Records:
    """``write_record``: one record's whole text in one write, after the format's header
    when the output is still empty."""

    format: Format
    size: int

    def write(self, text: str) -> None:
        raise NotImplementedError

    def write_record(self, answer: records.Answer) -> None:
        text = self.format.record(answer)
        if self.size == 0:
            text = self.format.header() + text
        self.write(text)
        self.records_written += 1


class Output(_Records):
    """An output file opened for resuming: locked, repaired, read, then appended to.
    ``fmt`` is a resumable ``formats.Format``."""

    def __init__(self, path: str, fmt: Format, overwrite: bool = False):
        self.path = path
        self.format = fmt
        self.records_written = 0  # by this run
        self.failed = False
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
        why = self.format.refuse(head) if head else None
        if why:
            raise UsageError(f"-o {self.path}: {why}")
        if self.format.name == "csv" and b"\n" in data:  # a header of other columns: an older docq's file
            first = data.split(b"\n", 1)[0].rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
            if first != self.format.header().lstrip("\ufeff").rstrip("\r\n").encode("utf-8"):
                raise UsageError(f"-o {self.path}: its columns are not the ones docq writes now (an older docq "
                                 "wrote it?); use --overwrite or another -o (docq export reads it)")
        try:
            valid, rows, bad = self.format.scan(data)
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
        try:
            while view:  # one write in practice; the loop covers a short write
                n = os.write(self.fd, view)
                view = view[n:]
            now = time.monotonic()
            if now - self._last_sync >= FSYNC_INTERVAL_S:
                os.fsync(self.fd)
                self._last_sync = now
        except OSError as exc:  # ENOSPC, EFBIG, EIO: a torn last record at worst, cut by the next run
            self.failed = True
            raise _write_failed(f"-o {self.path}", exc, self.records_written, resumable=True) from None
        self.size += len(data)

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if not self.failed:  # after a failed write that failure has been said already
                self.failed = True
                raise _write_failed(f"-o {self.path}", exc, self.records_written, resumable=True) from None
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


class StreamOutput(_Records):
    """Records to a text stream (stdout): nothing to resume, flushed per record."""

    def __init__(self, stream: IO[str], fmt: Format):
        self.stream = stream
        self.format = fmt
        self.done = Done()
        self.size = 0
        self.records_written = 0
        self.failed = False

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:  # stdout on a full disk, a closed pipe
            self.failed = True
            raise _write_failed("stdout", exc, self.records_written, resumable=False) from None
        self.size += len(text)

    def close(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            if not self.failed:
                self.failed = True
                raise _write_failed("stdout", exc, self.records_written, resumable=False) from None


# --- record serialisation (through records.py's writers) ---------------------------------
