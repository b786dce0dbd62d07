"""The batch job, top to bottom (``run``): plan what the output lacks, let the engine answer
it, write and count each record, show progress, annotate; Ctrl-C stops cleanly. See the
package docstring and ARCHITECTURE.md."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import IO, Callable, Sequence

from docvqa_cli import records
from docvqa_cli.batch.engine import ERROR_LIMIT, AnswerStep, Engine, Summary
from docvqa_cli.batch.local import local_engine
from docvqa_cli.batch.output import Done
from docvqa_cli.batch.prefetch import LoadFn
from docvqa_cli.batch.questions import Question
from docvqa_cli.errors import interrupt, one_line
from docvqa_cli.options import DEFAULT_KEEP

class _Stop:
    """First Ctrl-C: stop after the record in flight. Second: stop now (KeyboardInterrupt).
    While no record is in flight (``idle``: the engine loads the model or waits for a
    document's pages, and a hung document may never come), the first Ctrl-C stops at once."""

    def __init__(self, say: Callable[[str], None]):
        self.flag = False
        self.idle = False
        self.say = say
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.flag or self.idle:
            interrupt(frame)  # KeyboardInterrupt (a moment later inside exec()'d code: errors.interrupt)
            return
        self.flag = True
        self.say("stopping after the record in flight (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def plan(questions: Sequence[Question], docs: Sequence[str], done: Done, summary: Summary,
         say: Callable[[str], None], retry_errors: bool = False) -> list[tuple[str, list[Question]]]:
    """Per document, the questions not yet in the output (documents with none are dropped).
    With ``retry_errors``, a pair whose record (the last one in the output) carries an error
    is pending again: its new record is appended after the old one and is the one that counts."""
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
            previous = done.pairs.get((records.record_text(d), q.id))
            if previous is None:
                pending.append(q)
            elif retry_errors and previous[1]:
                pending.append(q)
                summary.retried += 1
            else:
                summary.skipped += 1
                summary.skipped_errors += previous[1]
        if pending:
            todo.append((d, pending))
    return todo


def run(
    questions: Sequence[Question],
    docs: Sequence[str],
    *,
    load: LoadFn | None = None,
    answerer: Callable[[], AnswerStep] | None = None,
    output,
    keep: float = DEFAULT_KEEP,
    jobs: int = 1,
    executor: str = "thread",
    model_name: str | None = None,
    progress: bool = False,
    stderr: IO[str] | None = None,
    annotate_dir: str | None = None,
    password: str | None = None,
    engine: Engine | None = None,
    retry_errors: bool = False,
) -> Summary:
    """Answer every (document, question) pair not yet in ``output``, one record each.

    ``engine`` does the work (default: ``local_engine(load, answerer, jobs, executor)``;
    ``answerer()`` makes the answer step and loads the model, only when there is work
    left). Environment and usage problems propagate; every other failure is a record. A
    record whose pair was already written is dropped (an engine that retries work may
    deliver it twice). With ``retry_errors``, pairs whose record carries an error are answered
    again (their new record appended). With ``annotate_dir``, each document's answers of this run are also
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
    todo = plan(questions, docs, output.done, summary, say, retry_errors)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    if engine is None:
        engine = local_engine(load, answerer, jobs, executor, model_name)

    doc_records: list[records.Answer] = []
    written: set[tuple[str, str]] = set()

    def emit(ans: records.Answer) -> None:
        records.writable(ans)  # a file name that is not UTF-8: escaped, never a crash
        if (ans.doc, ans.question_id) in written:
            return
        written.add((ans.doc, ans.question_id))
        doc_records.append(ans)
        output.write_record(ans)
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
                    if _annotate(doc, list(doc_records), annotate_dir, password, say):
                        summary.annotated += 1
                    else:
                        summary.annotate_failed += 1
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


def annotated_path(doc: str, folder: str) -> str:
    """Where the annotated copy of ``doc`` goes: its whole path made into one file name, so
    two documents with the same name in different folders do not overwrite each other.

    The mapping is one-to-one: ``%`` becomes ``%25``, a folder separator ``%2F``, a ``..``
    folder ``%2E%2E``, and a document that is not a PDF gets ``%.pdf`` (``scan.png`` ->
    ``scan.png%.pdf``, which no PDF's name maps to). So ``a__b.pdf`` and ``a/b.pdf``, or
    ``x..y.pdf`` and ``x_y.pdf``, get copies of their own."""
    rel = os.path.splitdrive(os.path.normpath(doc))[1].lstrip(os.sep)
    parts = [p.replace("%", "%25") for p in rel.split(os.sep)]
    parts = ["%2E%2E" if p == ".." else p for p in parts]
    name = "%2F".join(parts)
    if not name.lower().endswith(".pdf"):
        name += "%.pdf"
    return os.path.join(folder, name)


def _annotate(doc: str, answers: list[records.Answer], folder: str, password: str | None, say) -> bool:
    """Write the annotated copy; False (and a line on stderr) when it cannot be written."""
    from docvqa_cli import annotate

    try:
        os.makedirs(folder, exist_ok=True)
        annotate.write(doc, answers, annotated_path(doc, folder), password=password)
        return True
    except Exception as exc:  # the records are written; a failed picture must not stop the batch
        say(f"{doc}: no annotated copy ({one_line(exc, ERROR_LIMIT)})")
        return False


def resume_hint(argv: Sequence[str] | None = None) -> str:
    import shlex

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a != "--overwrite"]
    return "docq " + shlex.join(argv)
