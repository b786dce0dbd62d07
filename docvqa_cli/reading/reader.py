"""Reading documents in a worker process under a time limit (``--doc-timeout``).

MuPDF runs a document's content in C while holding Python's interpreter lock: a hostile PDF
(a few KB of form XObjects that draw each other, ``tests/make_hostile.py``) keeps it busy
for hours, and no thread, signal handler or Ctrl-C of the same process gets a turn. So
``TimedLoader`` reads each document (``documents.load``: open, text layer, OCR, the renders
OCR needs) in a child process and waits on a pipe. The child reports each page as it is
done; when no page is done for ``timeout`` seconds the child is killed and the document
becomes an ``InputError`` (one error record in batch mode), and the next document gets a
fresh child. The parent only waits in ``Connection.poll``, so Ctrl-C always ends it (and
the child with it).

The limit is on progress, not on the whole document: a 500-frame TIFF whose OCR takes half
an hour is fine while its pages keep coming; one page that takes longer than the limit is
not. The pages come back whole (one pickle, so a document's bytes travel once).

Rendering is under the same limit: a page whose text layer reads at once may still take
minutes to paint (``slow_render_pdf`` in ``tests/make_hostile.py``), and its pixels are
needed later, for a kept tile or an overview. So each page's ``render`` becomes a
``_TimedRender``: the thread that needs the image (batch's main thread) sends the request to
its own worker, which renders the page (``documents._Renderer``, the same pixels) and sends
them back raw; the document's bytes go to that worker once (it keeps the last ``_SOURCES``).
A page that takes longer than the limit kills the worker and fails its document: that render
and every later one of the document raise ``InputError`` (error records), and the batch goes
on. About 30-40 ms more per A4 page at 150 dpi (the pixels cross a pipe). Pickled to a Ray
actor, or after ``close``, pages render in the process that holds them, with no limit.

One child per calling thread (batch's loader threads each have their own); ``close`` ends
them all, from any thread (Ctrl-C in batch mode: the main thread, while loader threads wait):
it kills the children, and each waiting thread closes its own pipe (``_Worker``). ``timeout``
0 or None reads in this process, with no limit.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import uuid
from collections import deque
from multiprocessing.connection import Connection

from PIL import Image

from docvqa_cli.errors import DocqError, InputError
from docvqa_cli.options import DEFAULT_DOC_TIMEOUT
from docvqa_cli.reading import documents

_SOURCES = 4  # documents whose bytes a worker keeps for renders (batch answers a few together)
_STARTUP_LIMIT = 300  # seconds for a reading process to import docq (minutes only on a swamped machine)


def _child(conn: Connection) -> None:
    """The worker: reads the documents it is sent, one at a time, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    conn.send(("ready", None))  # imports done: the limit counts from here, not from start-up
    sources: dict = {}  # token -> documents._Source of the documents whose pages it renders (the last _SOURCES)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "render":
            _render_page(conn, sources, *message[1:])
            continue
        _, path, options = message
        try:
            pages = []
            for page in documents.iter_pages(path, **options, warn=lambda msg: conn.send(("warn", msg))):
                pages.append(page)
                conn.send(("page", (page.number, page.source)))
            conn.send(("pages", pages))
        except InputError as exc:  # sent as its parts: InputError(path, cause) does not pickle whole
            conn.send(("input", (exc.path, exc.cause)))
        except DocqError as exc:  # usage and environment problems (one message)
            conn.send(("error", exc))
        except MemoryError:
            conn.send(("input", (path, "out of memory while reading")))
        except Exception as exc:  # anything else MuPDF or an OCR engine raises
            text = (str(exc).strip().splitlines() or [""])[0][:200]
            conn.send(("input", (path, f"cannot be read ({type(exc).__name__}: {text})")))


def _render_page(conn: Connection, sources: dict, token: str, source, number: int, zoom, size) -> None:
    """The worker: one page's pixels (``documents._Renderer``), sent raw after their mode and size."""
    if source is not None:  # the parent sends a document's bytes once and mirrors this memory (_Worker.sources)
        sources[token] = source
        while len(sources) > _SOURCES:
            del sources[next(iter(sources))]
    try:
        image = documents._Renderer(sources[token], number, zoom, size)()
    except MemoryError:
        conn.send(("input", f"page {number}: out of memory while rendering"))
        return
    except Exception as exc:  # MuPDF's errors of a broken page
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        conn.send(("input", f"page {number} cannot be rendered ({type(exc).__name__}: {text})"))
        return
    conn.send(("image", (image.mode, image.size)))
    conn.send_bytes(image.tobytes())


class _Document:
    """What the timed renders of one document's pages share: its bytes (``documents._Source``),
    the token a worker knows them by, and the failure that ends every later render at once."""

    def __init__(self, path: str, source):
        self.path, self.source, self.token = path, source, uuid.uuid4().hex
        self.failure: str | None = None


class _TimedRender:
    """A page's ``render``: the page rendered by a worker process under the time limit
    (``TimedLoader.render``). Pickled (to a Ray actor) it is the plain in-process render again."""

    def __init__(self, loader: "TimedLoader", document: _Document, renderer):
        self.loader, self.document, self.renderer = loader, document, renderer

    def __call__(self):
        return self.loader.render(self.document, self.renderer)

    def __reduce__(self):
        return _plain, (self.renderer,)


def _plain(renderer):
    """Unpickling a ``_TimedRender``: its in-process render."""
    return renderer


class _Worker:
    """One reading process and the pipe to it.

    The pipe belongs to the thread that made the worker (``owner``): only that thread sends,
    receives, and closes it while it uses it (between ``begin`` and ``end``). Closing a pipe
    another thread is waiting on gives that thread EBADF, or worse, a descriptor number
    already reused for another file. So another thread ends a worker with ``stop``: it kills
    the child, which wakes the owner with EOF, and the owner closes the pipe when its call
    ends; a worker whose owner is not using it is closed by ``stop`` at once (the owner then
    never uses it again: ``begin`` says no)."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child, args=(child_end,), daemon=True, name="docq-reader")
        try:
            self.process.start()
        except BaseException:
            self.conn.close()
            raise
        finally:
            child_end.close()
        self.owner = threading.get_ident()
        self.ready = False
        self.sources: deque[str] = deque(maxlen=_SOURCES)  # tokens of the documents the child holds
        self._lock = threading.Lock()
        self._busy = False  # the owner is using the pipe
        self._stopped = False  # stop() was called: the owner must not start another call
        self._closed = False

    def begin(self) -> bool:
        """The owner starts a call; False if the worker was stopped or closed (make another)."""
        with self._lock:
            if self._stopped or self._closed:
                return False
            self._busy = True
            return True

    def end(self) -> None:
        """The owner's call is over; a worker stopped meanwhile is closed now."""
        with self._lock:
            self._busy = False
            stopped = self._stopped
        if stopped:
            self.close()

    def wait_ready(self) -> None:
        """Wait for the child's imports (slow on a busy machine; not the document's time)."""
        if not self.ready:
            if not self.conn.poll(_STARTUP_LIMIT):
                raise OSError(f"the reading process did not start in {_STARTUP_LIMIT} s")
            self.conn.recv()
            self.ready = True

    def stop(self) -> None:
        """From any thread: kill the child; close the pipe now if its owner is not using it."""
        with self._lock:
            self._stopped = True
            busy = self._busy
        self._kill()
        if not busy:
            self.close()

    def close(self) -> None:
        """Kill the child and close the pipe: the owner, or ``stop`` while the owner is not in
        a call. Idempotent; never raises (it runs while other errors, Ctrl-C, are in flight)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._kill()
        try:
            self.process.join(5)
        except (OSError, ValueError, AssertionError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def _kill(self) -> None:
        try:
            self.process.kill()  # a child already gone is no error (its exit code is kept)
        except (OSError, ValueError, AttributeError):
            pass


class TimedLoader:
    """``loader(path)`` -> the document's pages, read in a worker process (see module doc)."""

    def __init__(self, timeout: float | None = DEFAULT_DOC_TIMEOUT, warn=documents._warn, **options):
        self.timeout = timeout
        self.warn = warn
        self.options = options
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, path: str, on_page=None) -> list[documents.Page]:
        """The pages of ``path``; ``on_page(number, source)`` hears of each page as it is read."""
        if not self.timeout:
            pages = []
            for page in documents.iter_pages(path, warn=self.warn, **self.options):
                pages.append(page)
                if on_page:
                    on_page(page.number, page.source)
            return pages
        worker = self._worker(path)
        try:
            worker.wait_ready()
            worker.conn.send(("read", path, self.options))
            while True:
                if not worker.conn.poll(self.timeout):
                    self._retire(worker)
                    raise InputError(path, f"reading stopped: no page done in {self.timeout:g} s, the time "
                                           f"limit (--doc-timeout); a hostile or broken document?")
                kind, value = worker.conn.recv()
                if kind == "warn":
                    self.warn(value)
                elif kind == "page":
                    if on_page:
                        on_page(*value)
                elif kind == "pages":
                    return self._timed(path, value)
                elif kind == "input":
                    raise InputError(*value)
                elif kind == "error":
                    raise value
        except DocqError:  # the document's own error; the worker goes on
            raise
        except (EOFError, OSError):  # the worker died (killed, out of memory) or was stopped by close()
            self._retire(worker)
            if self._closed:
                raise InputError(path, "not read: docq is stopping") from None
            raise InputError(path, "the reading process died (out of memory, or killed)") from None
        except BaseException:  # Ctrl-C or anything unexpected: never leave a child reading
            self._retire(worker)
            raise
        finally:
            worker.end()

    def start(self) -> None:
        """Start this thread's worker now, without waiting on it: its imports (seconds on a busy
        machine) then overlap the model load instead of delaying the first render."""
        if self.timeout and getattr(self._local, "worker", None) is None:
            self._new_worker()

    def _timed(self, path: str, pages: list) -> list:
        """``pages`` whose later renders (of kept tiles, overviews) go to a worker under the limit."""
        documents_: dict[int, _Document] = {}
        for page in pages:
            if isinstance(page.render, documents._Renderer):
                source = page.render.source
                doc = documents_.setdefault(id(source), _Document(path, source))
                page.render = _TimedRender(self, doc, page.render)
        return pages

    def render(self, doc: _Document, renderer):
        """One page's image, rendered by this thread's worker: a page that takes longer than the
        limit kills the worker and fails its document (every later render of it fails at once).
        After ``close`` (or with no limit) the page renders in this process."""
        if doc.failure is not None:
            raise InputError(doc.path, doc.failure)
        if self._closed or not self.timeout:
            return renderer()
        worker = self._worker(doc.path)
        try:
            worker.wait_ready()
            known = doc.token in worker.sources
            worker.conn.send(("render", doc.token, None if known else doc.source, renderer.number, renderer.zoom,
                              renderer.size))
            if not known:
                worker.sources.append(doc.token)
            if not worker.conn.poll(self.timeout):
                self._retire(worker)
                doc.failure = (f"rendering stopped: page {renderer.number} not rendered in {self.timeout:g} s, the "
                               f"time limit (--doc-timeout); a hostile or broken document?")
                raise InputError(doc.path, doc.failure)
            kind, value = worker.conn.recv()
            if kind == "input":
                raise InputError(doc.path, value)
            mode, size = value
            return Image.frombytes(mode, size, worker.conn.recv_bytes())
        except DocqError:
            raise
        except (EOFError, OSError):
            self._retire(worker)
            if self._closed:
                raise InputError(doc.path, "not rendered: docq is stopping") from None
            doc.failure = "the rendering process died (out of memory, or killed)"
            raise InputError(doc.path, doc.failure) from None
        except BaseException:
            self._retire(worker)
            raise
        finally:
            worker.end()

    def __getstate__(self):  # to a loading process or a Ray task: the settings, not the children
        return {"timeout": self.timeout, "warn": self.warn, "options": self.options}

    def __setstate__(self, state):
        self.__init__(state["timeout"], state["warn"], **state["options"])

    def _worker(self, path: str) -> _Worker:
        """This thread's worker, started for this call (``begin``); a new one if it was stopped or died."""
        worker = getattr(self._local, "worker", None)
        if worker is not None and worker.process.is_alive() and worker.begin():
            return worker
        if worker is not None:
            self._retire(worker)
        worker = self._new_worker()
        if worker is None:
            raise InputError(path, "not read: docq is stopping")
        if not worker.begin():  # close() came in between: it has stopped the new worker already
            self._retire(worker)
            raise InputError(path, "not read: docq is stopping")
        return worker

    def _new_worker(self) -> _Worker | None:
        """A new worker for this thread (``start``, ``_worker``); None after ``close``."""
        with self._lock:  # not after close(): it would leave a child that nothing ends
            if self._closed:
                return None
            worker = _Worker()
            self._workers.append(worker)
        self._local.worker = worker
        return worker

    def _retire(self, worker: _Worker) -> None:
        """The owner ends its worker (never raises: Ctrl-C may be in flight)."""
        worker.close()
        if getattr(self._local, "worker", None) is worker:
            self._local.worker = None
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def close(self) -> None:
        """End every worker: from any thread, while other threads may be reading (``_Worker.stop``).
        A call still reading ends with an InputError; no call starts a worker after this."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
