"""``docq batch --engine ray``: the batch job on Ray Data, across GPUs and nodes.

The driver (the ``docq batch`` process) keeps everything that makes a batch job safe: the
question file, the document list, the output file with its lock, repair and resume plan
(``batch.plan``), and the writing of records (``batch.run``). Only the pending work goes to
Ray, as a Dataset of one row per document, ``{doc, questions}``:

    from_items ──► map(_load_row)  CPU tasks: open, render, OCR (``documents.load``);
                   │               the pages travel pickled (text-layer pages carry the
                   │               document's bytes and render on first need)
                   ▼
               map(_AnswerActor)   actors, one model load each (``answerer()``), num_gpus=1
                   │               on a cluster with GPUs (one actor per GPU), else one CPU
                   │               actor: select tiles and answer (``batch.answer_document``)
                   ▼
               iter_rows ──► the driver: ``{doc, records}`` per document, in any order,
                             written by ``batch.run`` to the same output

Failures. A document that cannot be read is error records, as in local mode (the load task
never raises). A worker that dies (killed, out of memory, a lost node) takes no record with
it: records exist only on the driver once written, and Ray runs the lost work again (load
tasks up to ``LOAD_RETRIES`` times; an actor is restarted and its document retried up to
``ANSWER_RETRIES`` times). Ray's delivery is therefore at least once: a document may be
answered twice, and the driver keeps the first delivery (a pair already written is never
written again). A document on which workers die every time is dropped by Ray after its
retries (``max_errored_blocks`` is unlimited for this job). An actor that dies takes with it
every document queued on it, and those good documents may run out of retries beside the one
that killed it: so when more than one document was not delivered, they are tried again, once,
each read and answered by a Ray task of its own (``retry_alone``, ``_answer_alone``). A death
then takes only its own document; and a task needs one CPU (and GPU) for itself alone, so the
pass goes on even while an actor of the first pass still holds its share of a small cluster
(a second Ray Data pass could hang there for good: its actor took the last free CPU and its
load tasks waited for the old actor's). Only what fails then (the poisonous file) gets error
records, so one file cannot stop a night's run nor cost its neighbours their answers.

Documents are read by path on the workers: on a cluster, DOCS must be at the same path on
every node (a shared file system). The docq package itself travels with the job
(``runtime_env`` ``py_modules``); its dependencies (torch, transformers, pymupdf, ...) must
be installed on the nodes.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import sys
import warnings
from typing import Callable, Iterator, Sequence

from docvqa_cli import records
from docvqa_cli.batch.engine import ERROR_LIMIT, AnswerStep, failed_record
from docvqa_cli.batch.local import answer_document
from docvqa_cli.batch.prefetch import LoadFn, _load_one
from docvqa_cli.batch.questions import Question
from docvqa_cli.errors import DocqError, EnvironmentProblem, UsageError, one_line

LOAD_RETRIES = 3  # a load task whose worker died is run again this many times
ANSWER_RETRIES = 3  # a document whose answering actor died is tried again this many times

INSTALL_HINT = "Ray is not installed: pip install 'docq[ray]' (or --engine local)"


def require_ray():
    """The ``ray`` module with Ray Data, or an EnvironmentProblem saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(INSTALL_HINT) from None
    return ray


def runtime_env() -> dict:
    """Ship this docq package with the job, so every worker runs the driver's code."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # docvqa_cli/
    return {"py_modules": [package]}


def connect(address: str | None) -> bool:
    """Join Ray (``address``: "auto", "HOST:PORT" or "ray://HOST:PORT"), or start a local
    Ray when it is None: quiet (no dashboard, worker logs not copied to the driver; Ray's
    own lines go to stderr). True when this call started or joined Ray (then the caller
    shuts it down); False when the process was already connected."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env())
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise EnvironmentProblem(f"--engine ray: cannot start or join {where} ({one_line(exc, ERROR_LIMIT)})") from None
    return True


# --- the Ray stages (they run in Ray workers) ------------------------------------------------

def _load_row(row: dict, load: LoadFn) -> dict:
    """CPU task: one document's pages, pickled; or its one-line error. Never raises.

    The file is opened by its absolute path (from the driver: a worker's working folder
    is not the user's); the error names it as the user gave it, as in local mode."""
    doc, path = row["doc"], row["path"]
    pages, error = _load_one(load, path)
    if error is not None and error.startswith(path) and path != doc:
        error = doc + error[len(path):]
    return {
        "doc": doc,
        "questions": row["questions"],
        "pages": pickle.dumps(pages, protocol=pickle.HIGHEST_PROTOCOL) if error is None else b"",
        "error": error or "",
    }


class _AnswerActor:
    """Actor: loads the model once, then answers one document per call.

    A model that cannot load for a reason docq explains (EnvironmentProblem, UsageError:
    a missing package, an unknown model) is not raised in the constructor, where Ray would
    restart the actor in vain and hide the message in a traceback: each row then carries
    it as ``fatal`` and the driver raises it, with docq's own message and exit code."""

    def __init__(self, answerer: Callable[[], AnswerStep], keep: float, model_name: str | None):
        self.fatal = ""
        try:
            self.step = answerer()
        except (EnvironmentProblem, UsageError) as exc:
            self.fatal = json.dumps([type(exc).__name__, str(exc)])
        self.keep = keep
        self.model_name = model_name

    def __call__(self, row: dict) -> dict:
        doc = row["doc"]
        if self.fatal:
            return {"doc": doc, "records": "[]", "fatal": self.fatal}
        questions = [Question(qid, text) for qid, text in json.loads(row["questions"])]
        error = row["error"] or None
        pages = pickle.loads(row["pages"]) if error is None else None
        answers = answer_document(doc, pages, error, questions, self.step, self.keep, self.model_name)
        return {"doc": doc, "records": json.dumps([a.to_dict() for a in answers], ensure_ascii=False), "fatal": ""}


def _answer_alone(row: dict, load: LoadFn, answerer: Callable[[], AnswerStep], keep: float,
                  model_name: str | None) -> dict:
    """Task of the retry pass: one document read and answered in a worker of its own (the
    model loaded for it alone), so that a worker death takes no other document with it."""
    return _AnswerActor(answerer, keep, model_name)(_load_row(row, load))


# --- the engine (runs in the driver) ---------------------------------------------------------

def plan_actors(cluster_gpus: float, device: str | None, actors: int | None) -> tuple[int, int]:
    """(number of answering actors, GPUs per actor): one actor per GPU of the cluster, or
    one CPU actor when it has none or ``--device cpu``; ``actors`` overrides the count."""
    gpus = 0 if (device or "auto") == "cpu" else int(cluster_gpus)
    if gpus:
        return (actors or gpus), 1
    return (actors or 1), 0


class RayEngine:
    """A ``batch.engine.Engine`` that runs the pending work on Ray Data (see the module docstring)."""

    def __init__(self, load: LoadFn, answerer: Callable[[], AnswerStep], *,
                 address: str | None = None, device: str | None = None, actors: int | None = None,
                 model_name: str | None = None, say: Callable[[str], None] | None = None):
        require_ray()
        self.load = load
        self.answerer = answerer
        self.address = address
        self.device = device
        self.actors = actors
        self.model_name = model_name
        self.say = say or (lambda msg: None)

    def __call__(self, todo: Sequence[tuple[str, list[Question]]], keep: float,
                 stop) -> Iterator[tuple[str, list[records.Answer]]]:
        import ray

        from ray.data import DataContext

        # Ray's driver prints cluster errors ("(raylet) A worker died ...") to sys.stdout,
        # looked up when it prints: point it at stderr while Ray runs. Records still reach
        # the real stdout through the writer's own reference to it (batch.StreamOutput).
        real_stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            started = connect(self.address)
        except BaseException:
            sys.stdout = real_stdout
            raise
        context = DataContext.get_current()
        saved = (context.enable_progress_bars, context.print_on_execution_start, context.max_errored_blocks)
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a document that kills its workers every time: error records
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        try:
            n_actors, gpus_each = plan_actors(ray.cluster_resources().get("GPU", 0), self.device, self.actors)
            self.say(f"Ray: {n_actors} answering actor{'s' if n_actors > 1 else ''}"
                     f"{' on 1 GPU each' if gpus_each else ' on CPU'}, "
                     f"{int(ray.cluster_resources().get('CPU', 0))} CPUs in the cluster")
            seen: set[str] = set()
            pending = list(todo)
            for alone in (False, True):
                rows = (self._alone(ray, pending, keep, n_actors, gpus_each) if alone
                        else self._rows(ray, pending, keep, n_actors, gpus_each))
                for row in rows:
                    if row["fatal"]:
                        kind, message = json.loads(row["fatal"])
                        raise (UsageError if kind == "UsageError" else EnvironmentProblem)(message)
                    doc = row["doc"]
                    if doc in seen:  # delivered again after a retry: the first one was written
                        continue
                    seen.add(doc)
                    yield doc, [records.Answer.from_dict(d) for d in json.loads(row["records"])]
                    if stop.flag:
                        return
                pending = [(d, qs) for d, qs in pending if d not in seen]
                if not retry_alone(len(pending), alone):
                    break
                self.say(f"Ray: an answering actor died; {len(pending)} documents it held are tried again, "
                         "each in a worker of its own")
                gc.collect()  # the first pass's actor handles, if a reference cycle still holds them
            questions = dict(todo)
            for doc in (d for d, _ in todo if d not in seen):
                message = f"{doc}: the Ray workers died on it at every try (see Ray's logs)"
                yield doc, [failed_record(doc, q, message, self.model_name) for q in questions[doc]]
        except Exception as exc:
            cause = _docq_cause(exc)
            if cause is not None:
                raise cause from None
            raise EnvironmentProblem(f"--engine ray: the Ray job failed ({one_line(exc, ERROR_LIMIT)})") from exc
        finally:
            context.enable_progress_bars, context.print_on_execution_start, context.max_errored_blocks = saved
            try:
                if started:
                    ray.shutdown()
            finally:
                sys.stdout = real_stdout


    def _items(self, todo) -> list[dict]:
        """The rows sent to Ray: ``{doc, path, questions}``, the questions as JSON."""
        return [{"doc": doc, "path": os.path.abspath(doc),
                 "questions": json.dumps([[q.id, q.text] for q in qs], ensure_ascii=False)}
                for doc, qs in todo]

    def _rows(self, ray, todo, keep: float, n_actors: int, gpus_each: int):
        """The first pass, on Ray Data: rows ``{doc, records, fatal}`` as they come."""
        items = self._items(todo)
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # one document a block
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameters for retries yet; revisit before Ray 2.64.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map(_load_row, fn_kwargs={"load": self.load}, num_cpus=1, max_retries=LOAD_RETRIES)
            ds = ds.map(_AnswerActor, fn_constructor_kwargs={"answerer": self.answerer, "keep": keep,
                                                          "model_name": self.model_name},
                        concurrency=n_actors, num_gpus=gpus_each, num_cpus=1,
                        max_restarts=-1, max_task_retries=ANSWER_RETRIES)
        return ds.iter_rows()

    def _alone(self, ray, todo, keep: float, n_actors: int, gpus_each: int):
        """The retry pass: each document read and answered by a task of its own, at most
        ``n_actors`` at a time (as many models in memory as the first pass had), no task
        retried. Rows ``{doc, records, fatal}`` as they come; a document whose worker died
        again yields none."""
        task = ray.remote(_answer_alone).options(num_cpus=1, num_gpus=gpus_each, max_retries=0)
        waiting = self._items(todo)
        running: list = []  # the tasks' object refs
        try:
            while waiting or running:
                while waiting and len(running) < n_actors:
                    running.append(task.remote(waiting.pop(0), self.load, self.answerer, keep, self.model_name))
                done, _ = ray.wait(running, num_returns=1)
                for ref in done:
                    running.remove(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        if _docq_cause(exc) is not None:
                            raise
                        continue  # its worker died (or it failed) again: error records at the end
                    yield row
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


def retry_alone(undelivered: int, alone: bool) -> bool:
    """Whether the documents a pass could not deliver are tried again, each in a worker of
    its own: when more than one is left (a dying actor takes every document queued on it, and
    one of them may be its only killer) and they have not been tried that way yet. One
    document left alone is the killer itself; it already had its retries."""
    return undelivered > 1 and not alone


def _docq_cause(exc: BaseException) -> DocqError | None:
    """A docq EnvironmentProblem / UsageError raised in a worker (the model failed to load,
    say), unwrapped from Ray's exception types; None when there is none."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for kind in (EnvironmentProblem, UsageError):
            if isinstance(e, kind):
                message = getattr(e, "message", None) or (e.args[0] if e.args else kind.__name__)
                return kind(str(message).strip().splitlines()[0])
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None
