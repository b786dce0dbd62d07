"""Batch runs: a question file swept over many documents, resumable, never losing work.

The job reads top to bottom in ``run``: read the questions, find the documents, open the
output and repair its torn tail, skip the pairs it already holds, then for each document
load its pages once (in background workers, ahead of the model) and answer its pending
questions, writing each record whole as soon as it exists. Who loads and answers is the
engine's business (``local_engine``: this process, loading ahead in workers;
``ray_engine.RayEngine``: Ray tasks and GPU actors); what is written, counted, shown and
annotated is ``run``'s, the same for both.

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
import glob
import io
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Iterator, Sequence

from docvqa_cli import records
from docvqa_cli.options import DEFAULT_KEEP
from docvqa_cli.documents import IMAGE_EXTENSIONS, sniff
from docvqa_cli.errors import EnvironmentProblem, InputError, UsageError, one_line

OUTPUT_FORMATS = ("jsonl", "csv")
DOCUMENT_EXTENSIONS = {".pdf"} | IMAGE_EXTENSIONS
FSYNC_INTERVAL_S = 1.0
# Loading workers: thread workers measured best here (benchmarks/RESULTS.md): 1 on 2 cores,
# where a second worker only fights the model for the CPU; a quarter of the cores (at most
# 4) on bigger machines, where OCR is what the GPU would wait on.
DEFAULT_JOBS = min(4, max(1, (os.cpu_count() or 2) // 4))
# On a CUDA out-of-memory, a question is tried again with these fractions of --keep.
OOM_RETRY_FACTORS = (0.5, 0.25)

# The answer step as batch sees it: pages of one document, its pending (id, question)
# pairs and a keep ratio in, one record per question out (in any order).
AnswerFn = Callable[[list, list[tuple[str, str]], float], Iterable[records.Answer]]
LoadFn = Callable[[str], list]


# --- questions --------------------------------------------------------------------------

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


# --- documents --------------------------------------------------------------------------

def is_document(path: str) -> bool:
    """Whether a file found in a folder is one to read: by its first bytes, or its extension.

    A file with a document extension is taken even when its content is wrong (an empty or
    corrupt ``x.pdf``), so that it gets error records instead of vanishing from the job.
    """
    if os.path.splitext(path)[1].lower() in DOCUMENT_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return False
    return sniff(head) is not None


def find_documents(
    specs: Sequence[str], stdin: IO[str] | None = None, warn: Callable[[str], None] = None
) -> list[str]:
    """Document paths, in a stable order and without repeats, from files, folders, globs and -.

    A file named on the command line (or on stdin) is always taken; folders are walked
    recursively (hidden entries skipped) and globs expanded, keeping documents only
    (``is_document``). A path that does not exist is kept: it becomes error records.
    """
    warn = warn or (lambda msg: print(f"docq: {msg}", file=sys.stderr))
    found: dict[str, None] = {}

    def add(path: str) -> None:
        found.setdefault(path, None)

    def walk(folder: str) -> None:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = os.path.join(root, name)
                if is_document(path):
                    add(path)

    def take(spec: str, literal: bool) -> None:
        if os.path.isdir(spec):
            walk(spec)
        elif os.path.lexists(spec) or literal or not glob.has_magic(spec):
            add(spec)
        else:
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                warn(f"{spec}: matches no file")
            for m in matches:
                if os.path.isdir(m):
                    walk(m)
                elif is_document(m):
                    add(m)

    for spec in specs:
        if spec == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    take(line, literal=True)
        else:
            take(spec, literal=False)
    return list(found)


# --- the output file: repair, what is done, appending whole records ------------------------

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


# --- loading documents ahead of the model -------------------------------------------------

def _load_one(load: LoadFn, path: str) -> tuple[list | None, str | None]:
    """(pages, None) or (None, a one-line error naming the file): never raises."""
    try:
        return load(path), None
    except InputError as exc:
        return None, str(exc)
    except MemoryError:
        return None, f"{path}: out of memory while loading"
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        return None, f"{path}: cannot be read ({type(exc).__name__}: {text})"


def _ignore_sigint() -> None:  # worker processes: Ctrl-C is the main process's business
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Prefetcher:
    """Loads documents ahead of the model, in order, up to ``jobs`` in flight in workers.

    Loading starts as soon as it is made (so the first documents render while the model
    loads). ``jobs`` 0 loads each document when its turn comes (no overlap). At most
    jobs + 1 documents' pages are held at once.
    """

    def __init__(self, docs: Sequence[str], load: LoadFn, jobs: int, executor: str = "thread"):
        self.load = load
        self.jobs = jobs
        self.queue: deque[tuple[str, Future]] = deque()
        self.it = iter(docs)
        self.pool = None
        if jobs <= 0:
            return
        if executor == "process":
            import multiprocessing

            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_ignore_sigint)
        else:
            self.pool = ThreadPoolExecutor(jobs, thread_name_prefix="docq-load")
        for _ in range(jobs + 1):
            if not self._submit():
                break

    def _submit(self) -> bool:
        d = next(self.it, None)
        if d is None:
            return False
        self.queue.append((d, self.pool.submit(_load_one, self.load, d)))
        return True

    def __iter__(self) -> Iterator[tuple[str, list | None, str | None]]:
        if self.pool is None:
            for d in self.it:
                yield (d, *_load_one(self.load, d))
            return
        while self.queue:
            d, fut = self.queue.popleft()
            self._submit()
            try:
                pages, err = fut.result()
            except Exception as exc:  # a worker process died (killed, out of memory)
                pages, err = None, f"{d}: the loading worker failed ({one_line(exc, ERROR_LIMIT)})"
            yield d, pages, err

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


# --- the run ------------------------------------------------------------------------------

@dataclass
class Summary:
    documents: int = 0  # documents in the job
    documents_done: int = 0  # documents answered (or failed) in this run
    answered: int = 0  # records without error written in this run
    errors: int = 0  # records with an error written in this run
    skipped: int = 0  # pairs already in the output
    skipped_errors: int = 0  # of those, records that carry an error
    seconds: float = 0.0
    tiles_kept: int = 0
    tiles_total: int = 0
    interrupted: bool = False
    repaired_bytes: int = 0

    @property
    def job_has_errors(self) -> bool:
        return bool(self.errors or self.skipped_errors)

    def line(self) -> str:
        rate = self.documents_done / self.seconds if self.seconds > 0 else 0.0
        tiles = (
            f"tiles encoded {self.tiles_kept} of {self.tiles_total} ({100 * self.tiles_kept / self.tiles_total:.0f}%)"
            if self.tiles_total else "tiles encoded 0"
        )
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (
            f"batch: {self.answered} answered, {self.errors} errors{skipped}; "
            f"{self.documents_done} of {self.documents} documents in {self.seconds:.1f} s "
            f"({rate:.2f} docs/s); {tiles}"
        )


def _oom_text(message: str) -> bool:
    """Whether an error message is an out-of-memory (torch.cuda.OutOfMemoryError and kin)."""
    return "OutOfMemoryError" in message or "out of memory" in message.lower()


def _free_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


ERROR_LIMIT = 200  # characters of an exception's message kept in an error record


class _Stop:
    """First Ctrl-C: stop after the record in flight. Second: stop now (KeyboardInterrupt)."""

    def __init__(self, say: Callable[[str], None]):
        self.flag = False
        self.say = say
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        self.say("stopping after the record in flight (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def plan(questions: Sequence[Question], docs: Sequence[str], done: Done, summary: Summary,
         say: Callable[[str], None]) -> list[tuple[str, list[Question]]]:
    """Per document, the questions not yet in the output (documents with none are dropped)."""
    texts = {q.id: q.text for q in questions}
    changed = sorted({qid for (_, qid), (text, _) in done.pairs.items()
                      if qid in texts and text and text != texts[qid]})
    if changed:
        say(f"the output holds other wording for {', '.join(changed)}; ids of a .txt question file "
            "follow line order, so add new questions at the end (or give ids in JSONL / CSV)")
    todo = []
    for d in docs:
        pending = []
        for q in questions:
            previous = done.pairs.get((d, q.id))
            if previous is None:
                pending.append(q)
            else:
                summary.skipped += 1
                summary.skipped_errors += previous[1]
        if pending:
            todo.append((d, pending))
    return todo


# An engine runs the pending work: ``(todo, keep, stop)`` in, where ``todo`` is ``plan``'s
# list of (document, its pending questions) and ``stop.flag`` turns true on Ctrl-C; out, per
# document, ``(doc, its records)``, documents in any order, each document's records
# together. ``run`` writes them, counts them, shows progress and annotates: the same for
# every engine (``local_engine`` here, ``ray_engine.RayEngine`` on a Ray cluster).
Engine = Callable[[list, float, object], Iterator[tuple[str, Iterable[records.Answer]]]]


def failed_record(doc: str, q: Question, message: str, model_name: str | None) -> records.Answer:
    return records.Answer(doc=doc, question_id=q.id, question=q.text, model=model_name, error=message)


def answer_document(doc: str, pages, error: str | None, questions: Sequence[Question], answer: AnswerFn,
                    keep: float, model_name: str | None = None, stop=None) -> Iterator[records.Answer]:
    """One document's records: one per question, errors as records, never a gap.

    ``pages`` are the loaded pages, or None with ``error`` (the load's one-line message):
    then every question gets that error. An out-of-memory is retried with fewer tiles
    (``_retry``); a question the answer step skipped gets an error record. ``stop.flag``
    (Ctrl-C) ends the document early; the caller resumes it later."""
    model_name = getattr(answer, "model_name", None) or model_name

    def failed(d, q, message):
        return failed_record(d, q, message, model_name)

    pending = {q.id: q for q in questions}
    if error is not None:
        for q in list(pending.values()):
            del pending[q.id]
            yield failed(doc, q, error)
        return
    stopped = (lambda: stop.flag) if stop is not None else (lambda: False)
    while pending and not stopped():
        try:
            for ans in answer(pages, [(q.id, q.text) for q in pending.values()], keep):
                pending_q = pending.pop(ans.question_id, None)
                if pending_q is None:
                    continue
                ans.doc = doc
                if ans.error and _oom_text(ans.error):  # the answer step recorded it
                    ans = _retry(doc, pending_q, ans.error, pages, answer, keep, failed)
                yield ans
                if stopped():
                    break
            else:
                # The answer step skipped a question: record it, never leave a gap.
                for q in list(pending.values()):
                    del pending[q.id]
                    yield failed(doc, q, f"{doc}: the model gave no answer")
        except (EnvironmentProblem, UsageError):
            raise
        except Exception as exc:
            if not pending:
                break
            q = pending.pop(next(iter(pending)))
            yield _retry(doc, q, one_line(exc, ERROR_LIMIT), pages, answer, keep, failed)


def local_engine(load: LoadFn, answerer: Callable[[], AnswerFn], jobs: int = 1, executor: str = "thread",
                 model_name: str | None = None) -> Engine:
    """This process answers; ``jobs`` workers load the next documents meanwhile
    (``Prefetcher``). Where the answer step can (``answer.many``), the questions of
    consecutive documents share forwards: documents are gathered until they hold
    ``answer.batch_size`` questions, answered together, then yielded one by one."""

    def engine(todo, keep, stop):
        loads = Prefetcher([d for d, _ in todo], load, jobs, executor)
        try:
            answer = answerer()
            size = getattr(answer, "batch_size", 1)
            many = getattr(answer, "many", None) if size > 1 else None
            group: list = []

            def flush():
                ready = [(doc, pages, qs) for doc, pages, error, qs in group if error is None]
                answered = iter(_answer_many(many, ready, keep) if len(ready) > 1 else [None] * len(ready))
                for doc, pages, error, qs in group:
                    first = next(answered) if error is None else None
                    step = _replay(first, answer) if first is not None else answer
                    yield doc, answer_document(doc, pages, error, qs, step, keep, model_name, stop)
                group.clear()

            for (doc, pages, error), (_, questions_left) in zip(loads, todo):
                if many is None:
                    yield doc, answer_document(doc, pages, error, questions_left, answer, keep, model_name, stop)
                    continue
                group.append((doc, pages, error, questions_left))
                if sum(len(g[3]) for g in group if g[2] is None) >= size or stop.flag:
                    yield from flush()
            if group:
                yield from flush()
        finally:
            loads.close()

    return engine


def _answer_many(many, ready, keep) -> list:
    """The records of several documents answered together; on any failure, None for each
    (each document is then answered on its own, where its errors become its records)."""
    try:
        return many([(doc, pages, [(q.id, q.text) for q in qs]) for doc, pages, qs in ready], keep)
    except (EnvironmentProblem, UsageError):
        raise
    except Exception:
        return [None] * len(ready)


def _replay(records_: list, answer: AnswerFn) -> AnswerFn:
    """An answer step that gives back records already computed for a document's first call
    (``answer_document``), and answers anew (retries) after that."""
    state = {"first": True}

    def step(pages, questions, keep):
        if state["first"]:
            state["first"] = False
            wanted = {qid for qid, _ in questions}
            return iter([r for r in records_ if r.question_id in wanted])
        return answer(pages, questions, keep)

    step.model_name = getattr(answer, "model_name", None)
    return step


def run(
    questions: Sequence[Question],
    docs: Sequence[str],
    *,
    load: LoadFn | None = None,
    answerer: Callable[[], AnswerFn] | None = None,
    output,
    serialiser: Serialiser,
    keep: float = DEFAULT_KEEP,
    jobs: int = 1,
    executor: str = "thread",
    model_name: str | None = None,
    progress: bool = False,
    stderr: IO[str] | None = None,
    annotate_dir: str | None = None,
    password: str | None = None,
    engine: Engine | None = None,
) -> Summary:
    """Answer every (document, question) pair not yet in ``output``, one record each.

    ``engine`` does the work (default: ``local_engine(load, answerer, jobs, executor)``;
    ``answerer()`` makes the answer step and loads the model, only when there is work
    left). Environment and usage problems propagate; every other failure is a record. A
    record whose pair was already written is dropped (an engine that retries work may
    deliver it twice). With ``annotate_dir``, each document's answers of this run are also
    highlighted in a PDF copy there (``annotated_path``).
    """
    stderr = stderr or sys.stderr

    def say(msg: str) -> None:
        print(f"docq: {msg}", file=stderr, flush=True)

    started = time.perf_counter()
    summary = Summary(documents=len(docs), repaired_bytes=output.done.repaired_bytes)
    if output.done.repaired_bytes:
        say(f"repaired the output: cut a torn last record ({output.done.repaired_bytes} bytes)")
    if output.done.bad_lines:
        say(f"{output.done.bad_lines} unreadable lines in the output were left as they are; their pairs are answered again")
    todo = plan(questions, docs, output.done, summary, say)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    if engine is None:
        engine = local_engine(load, answerer, jobs, executor, model_name)

    doc_records: list[records.Answer] = []
    written: set[tuple[str, str]] = set()

    def emit(ans: records.Answer) -> None:
        if (ans.doc, ans.question_id) in written:
            return
        written.add((ans.doc, ans.question_id))
        doc_records.append(ans)
        text = serialiser.record(ans)
        if serialiser.fmt == "csv" and output.size == 0:
            text = (serialiser.header or "") + text
        output.write(text)
        if ans.error:
            summary.errors += 1
        else:
            summary.answered += 1
            summary.tiles_kept += ans.tiles_kept or 0
            summary.tiles_total += ans.tiles_total or 0
        if bar is not None:
            bar.update(1)

    bar = None
    stream = None
    try:
        with _Stop(say) as stop:
            stream = engine(todo, keep, stop)
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=sum(len(p) for _, p in todo), unit="q", file=stderr, dynamic_ncols=True,
                           smoothing=0.1, desc="questions", postfix={"docs": f"0/{len(todo)}"})
            for doc, doc_answers in stream:
                doc_records.clear()
                for ans in doc_answers:
                    emit(ans)
                    if stop.flag:
                        break
                summary.documents_done += 1
                if annotate_dir and doc_records and any(not a.error for a in doc_records):
                    _annotate(doc, list(doc_records), annotate_dir, password, say)
                if bar is not None:
                    bar.set_postfix(docs=f"{summary.documents_done}/{len(todo)}", errors=summary.errors, refresh=False)
                if stop.flag:
                    summary.interrupted = True
                    break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if stream is not None and hasattr(stream, "close"):
            stream.close()
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - started
    return summary


def _retry(doc, q, message: str, pages, answer, keep, failed) -> records.Answer:
    """After question ``q`` failed with ``message``: on out-of-memory, try it again with fewer
    tiles (``OOM_RETRY_FACTORS`` of --keep); otherwise, or if that fails too, record the error."""
    if not _oom_text(message):
        return failed(doc, q, message if message.startswith(doc) else f"{doc}: {message}")
    for factor in OOM_RETRY_FACTORS:
        _free_cuda()
        try:
            ans = next(iter(answer(pages, [(q.id, q.text)], keep * factor)), None)
        except (EnvironmentProblem, UsageError):
            raise
        except Exception as exc:
            message = one_line(exc, ERROR_LIMIT)
        else:
            if ans is None:
                message = "the model gave no answer"
            elif not ans.error:
                ans.doc = doc
                return ans
            else:
                message = ans.error
        if not _oom_text(message):
            break
    _free_cuda()
    if _oom_text(message):
        message = f"out of memory, also with fewer tiles (--keep {keep * OOM_RETRY_FACTORS[-1]:g}): {message}"
    return failed(doc, q, f"{doc}: {message}")


def annotated_path(doc: str, folder: str) -> str:
    """Where the annotated copy of ``doc`` goes: its path made into one file name, so two
    documents with the same name in different folders do not overwrite each other."""
    rel = os.path.splitdrive(os.path.normpath(doc))[1].lstrip(os.sep)
    rel = rel.replace("..", "_").replace(os.sep, "__")
    if not rel.lower().endswith(".pdf"):  # scan.png -> scan.png.pdf (never clashes with scan.pdf)
        rel += ".pdf"
    return os.path.join(folder, rel)


def _annotate(doc: str, answers: list[records.Answer], folder: str, password: str | None, say) -> None:
    from docvqa_cli import annotate

    try:
        os.makedirs(folder, exist_ok=True)
        annotate.write(doc, answers, annotated_path(doc, folder), password=password)
    except Exception as exc:  # the records are written; a failed picture must not stop the batch
        say(f"{doc}: no annotated copy ({one_line(exc, ERROR_LIMIT)})")


def resume_hint(argv: Sequence[str] | None = None) -> str:
    import shlex

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a != "--overwrite"]
    return "docq " + shlex.join(argv)


def model_answerer(open_backend: Callable[[], tuple], prompt: str | None,
                   max_new_tokens: int | None, batch_size: int | None = None) -> Callable[[], AnswerFn]:
    """The answer step of ``docq ask`` (``pipeline.answer_questions``), loaded on first need.

    ``open_backend()`` loads the model and returns (backend, visual scorer or None)."""

    def make() -> AnswerFn:
        from docvqa_cli import pipeline, prompts

        template = prompts.load(prompt)
        backend, visual = open_backend()
        tokens = prompts.max_new_tokens(template, max_new_tokens)
        size = pipeline.batch_size_for(backend, tokens, batch_size)

        def answer(pages, questions, keep):
            return pipeline.answer_questions(pages, questions, backend, keep=keep, prompt=template,
                                             max_new_tokens=tokens, visual=visual, batch_size=size)

        def many(items, keep):
            """[(doc, pages, questions)] of several documents, answered ``size`` questions to a
            forward across documents: a list of records per document, in order."""
            jobs = []
            for doc, pages, questions in items:
                tiles, overviews = pipeline.document_tiles(pages, backend), {}
                jobs += [pipeline.Job(doc, pages, str(qid), q, tiles, overviews) for qid, q in questions]
            out = {id(pages): [] for _, pages, _ in items}
            for job, record in zip(jobs, pipeline.answer_pairs(jobs, backend, keep=keep, prompt=template,
                                                               max_new_tokens=tokens, visual=visual,
                                                               batch_size=size)):
                out[id(job.pages)].append(record)
            return [out[id(pages)] for _, pages, _ in items]

        answer.many = many
        answer.batch_size = size

        answer.model_name = backend.name
        return answer

    return make
