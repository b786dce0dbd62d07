"""Loading documents ahead of the model: ``Prefetcher`` renders and OCRs the next documents
in worker threads (or processes) while the model answers. See ARCHITECTURE.md."""

from __future__ import annotations

import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

from docvqa_cli.batch.engine import ERROR_LIMIT
from docvqa_cli.errors import InputError, one_line

# Loading workers: thread workers measured best here (benchmarks/RESULTS.md): 1 on 2 cores,
# where a second worker only fights the model for the CPU; a quarter of the cores (at most
# 4) on bigger machines, where OCR is what the GPU would wait on.
DEFAULT_JOBS = min(4, max(1, (os.cpu_count() or 2) // 4))


LoadFn = Callable[[str], list]


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
