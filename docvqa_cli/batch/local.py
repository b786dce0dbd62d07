"""The local engine: this process answers, workers load the next documents meanwhile;
one document's records with the out-of-memory retry (``answer_document``), shared with the
Ray engine. See ARCHITECTURE.md."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from docvqa_cli import records
from docvqa_cli.batch.engine import ERROR_LIMIT, AnswerStep, Engine, failed_record
from docvqa_cli.batch.prefetch import LoadFn, Prefetcher
from docvqa_cli.batch.questions import Question
from docvqa_cli.errors import OOM_RETRY_FACTORS, ErrorKind, free_device_memory, kind_of, one_line, oom_gave_up


def answer_document(doc: str, pages, error: str | None, questions: Sequence[Question], step: AnswerStep,
                    keep: float, model_name: str | None = None, stop=None) -> Iterator[records.Answer]:
    """One document's records: one per question, errors as records, never a gap.

    ``pages`` are the loaded pages, or None with ``error`` (the load's one-line message):
    then every question gets that error. An answer step that raises out of memory
    (``errors.ErrorKind``) is tried again with fewer tiles (``_retry``); a record that carries
    a failure is final (``pipeline.Answerer`` has already retried its own out-of-memory); a
    question the answer step skipped gets an error record; environment and usage problems
    stop the job. ``stop.flag``
    (Ctrl-C) ends the document early; the caller resumes it later."""
    model_name = step.model_name or model_name

    def failed(d, q, message, kind=ErrorKind.other):
        return failed_record(d, q, message, model_name, kind)

    pending = {q.id: q for q in questions}
    if error is not None:
        for q in list(pending.values()):
            del pending[q.id]
            yield failed(doc, q, error, ErrorKind.bad_document)
        return
    stopped = (lambda: stop.flag) if stop is not None else (lambda: False)
    while pending and not stopped():
        failure = None
        try:
            for ans in step.answer(pages, [(q.id, q.text) for q in pending.values()], keep):
                pending_q = pending.pop(ans.question_id, None)
                if pending_q is None:
                    continue
                ans.doc = doc
                if ans.failure is ErrorKind.out_of_memory and not ans.error.startswith(doc):
                    ans.error = f"{doc}: {ans.error}"  # final (retried already), named like batch's own
                yield ans
                if stopped():
                    break
            else:
                # The answer step skipped a question: record it, never leave a gap.
                for q in list(pending.values()):
                    del pending[q.id]
                    yield failed(doc, q, f"{doc}: the model gave no answer")
        except Exception as exc:
            kind = kind_of(exc)
            if kind in (ErrorKind.environment, ErrorKind.usage):
                raise
            failure = one_line(exc, ERROR_LIMIT), kind
        # Outside ``except``: the exception, and the failed forward's tensors with it, are gone.
        if failure is not None:
            if not pending:
                break
            q = pending.pop(next(iter(pending)))
            yield _retry(doc, q, *failure, pages, step, keep, failed)


def local_engine(load: LoadFn, answerer: Callable[[], AnswerStep], jobs: int = 1, executor: str = "thread",
                 model_name: str | None = None) -> Engine:
    """This process answers; ``jobs`` workers load the next documents meanwhile
    (``Prefetcher``). When the answer step takes more than one question a forward
    (``batch_size`` > 1), the questions of consecutive documents share forwards: documents
    are gathered until they hold ``batch_size`` questions, answered together
    (``answer_many``), then yielded one by one."""

    def engine(todo, keep, stop):
        loads = Prefetcher([d for d, _ in todo], load, jobs, executor)
        try:
            if stop is not None:  # loading the model: no record in flight, Ctrl-C stops at once
                stop.idle = True
            answer = answerer()
            if stop is not None:
                stop.idle = False
            size = answer.batch_size
            many = answer.answer_many if size > 1 else None
            group: list = []

            def flush():
                ready = [(doc, pages, qs) for doc, pages, error, qs in group if error is None]
                answered = iter(_answer_many(many, ready, keep) if len(ready) > 1 else [None] * len(ready))
                for doc, pages, error, qs in group:
                    first = next(answered) if error is None else None
                    step = _Replay(first, answer) if first is not None else answer
                    yield doc, answer_document(doc, pages, error, qs, step, keep, model_name, stop)
                group.clear()

            for (doc, pages, error), (_, questions_left) in zip(_waiting(loads, stop), todo):
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


def _waiting(loads, stop):
    """``loads``, with ``stop.idle`` set while the next document's pages are awaited (Ctrl-C
    then stops at once: no record is in flight, and a hung document may never come)."""
    it = iter(loads)
    while True:
        if stop is not None and stop.flag:  # Ctrl-C came while the model loaded: do not wait on
            raise KeyboardInterrupt  # a document that may never come
        if stop is not None:
            stop.idle = True
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            if stop is not None:
                stop.idle = False
        yield item


def _answer_many(many, ready, keep) -> list:
    """The records of several documents answered together; on any failure, None for each
    (each document is then answered on its own, where its errors become its records)."""
    try:
        return many([(doc, pages, [(q.id, q.text) for q in qs]) for doc, pages, qs in ready], keep)
    except Exception as exc:
        if kind_of(exc) in (ErrorKind.environment, ErrorKind.usage):
            raise
        return [None] * len(ready)


class _Replay:
    """An answer step that gives back records already computed for a document's first call
    (``answer_document``), and answers anew (retries) after that."""

    def __init__(self, records_: list, step: AnswerStep):
        self.records = records_
        self.step = step
        self.first = True
        self.batch_size = step.batch_size
        self.model_name = step.model_name

    def answer(self, pages, questions, keep):
        if self.first:
            self.first = False
            wanted = {qid for qid, _ in questions}
            return iter([r for r in self.records if r.question_id in wanted])
        return self.step.answer(pages, questions, keep)

    def answer_many(self, items, keep):
        return self.step.answer_many(items, keep)


def _retry(doc, q, message: str, kind: ErrorKind, pages, step: AnswerStep, keep, failed) -> records.Answer:
    """After question ``q`` failed with ``message`` of ``kind``: out of memory, try it again
    with fewer tiles (``OOM_RETRY_FACTORS`` of --keep); otherwise, or if that fails too,
    record the error."""
    if kind is not ErrorKind.out_of_memory:
        return failed(doc, q, message if message.startswith(doc) else f"{doc}: {message}", kind)
    for factor in OOM_RETRY_FACTORS:
        free_device_memory()
        try:
            ans = next(iter(step.answer(pages, [(q.id, q.text)], keep * factor)), None)
        except Exception as exc:
            kind = kind_of(exc)
            if kind in (ErrorKind.environment, ErrorKind.usage):
                raise
            message = one_line(exc, ERROR_LIMIT)
        else:
            if ans is None:
                message, kind = "the model gave no answer", ErrorKind.other
            elif not ans.error:
                ans.doc = doc
                return ans
            else:
                message, kind = ans.error, ans.failure or ErrorKind.other
        if kind is not ErrorKind.out_of_memory:
            break
    free_device_memory()
    if kind is ErrorKind.out_of_memory:
        message = oom_gave_up(message, keep)
    return failed(doc, q, f"{doc}: {message}", kind)
