"""One exit-code enum and the exceptions that carry it (after OCRmyPDF's exceptions.py).

Every exception says what went wrong and, where it can, what the user should do. Only
``docvqa_cli.cli`` turns them into a line on stderr and an exit code.
"""

from __future__ import annotations

import sys
from enum import Enum, IntEnum


class ExitCode(IntEnum):
    ok = 0
    partial = 1  # some records carry an error (or the one input was bad)
    usage = 2  # bad options or arguments
    environment = 3  # this machine cannot run the model: say what to install
    incomplete = 4  # the job could not finish (its output cannot be written): resume once fixed
    ctrl_c = 130


class DocqError(Exception):
    """Base class: a one-line message and the exit code it maps to."""

    exit_code = ExitCode.partial

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(DocqError):
    """A document that cannot be read: names the file and the cause."""

    exit_code = ExitCode.partial

    def __init__(self, path: str, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


class UsageError(DocqError):
    """An option or argument out of range; the message names the flag."""

    exit_code = ExitCode.usage


class EnvironmentProblem(DocqError):
    """Something this machine lacks (a package, a GPU, a program); says how to fix it."""

    exit_code = ExitCode.environment


class JobIncomplete(DocqError):
    """The job cannot go on (its output cannot be written); records already written are safe."""

    exit_code = ExitCode.incomplete


class ErrorKind(Enum):
    """What kind of failure an exception is, carried with it (and with the error record it
    becomes, ``records.Answer.failure``) to where it is handled: batch retries
    ``out_of_memory`` with fewer tiles, stops on ``environment`` and ``usage``, and records
    the rest."""

    out_of_memory = "out of memory"  # torch's OutOfMemoryError (CUDA), MemoryError
    bad_document = "bad document"  # InputError: this document cannot be read
    environment = "environment"  # EnvironmentProblem: this machine lacks something
    usage = "usage"  # UsageError: an option or argument is wrong
    other = "other"  # anything else: a record with the error, the job goes on


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of ``exc``, by its type (never by its text)."""
    if isinstance(exc, MemoryError):
        return ErrorKind.out_of_memory
    torch = sys.modules.get("torch")  # only loaded when a model is: then its OOM type exists
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return ErrorKind.out_of_memory
    for kind, cls in ((ErrorKind.bad_document, InputError), (ErrorKind.environment, EnvironmentProblem),
                      (ErrorKind.usage, UsageError)):
        if isinstance(exc, cls):
            return kind
    return ErrorKind.other


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters), for error records."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- running out of (GPU) memory: one policy for ask, batch and the Ray engine ----------------

OOM_RETRY_FACTORS = (0.5, 0.25)  # of --keep: the tiles a question retries with after running out of memory
OOM_GAVE_UP = "out of memory, also with fewer tiles"  # starts the record of a question that still ran out


def oom_gave_up(message: str, keep: float) -> str:
    """The error of a question that ran out of memory with its fewest tiles too."""
    return f"{OOM_GAVE_UP} (--keep {keep * OOM_RETRY_FACTORS[-1]:g}): {message}"


def free_device_memory() -> None:
    """Collect garbage and hand the CUDA allocator's cached blocks back (after a failed batch;
    call it where the failure's exception is gone, or its tensors stay alive). Imports
    nothing: without torch loaded there is nothing to free."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- Ctrl-C: exit 130, never death by SIGINT --------------------------------------------------

_DEFER_LIMIT = 50  # times a Ctrl-C waits 20 ms for exec()'d code to end (1 s), then is raised anyway
_deferred = 0


def interrupt(frame) -> None:
    """Raise KeyboardInterrupt for a Ctrl-C that a SIGINT handler saw at ``frame`` (``on_ctrl_c``,
    batch's ``_Stop``); but not inside code that exec() or eval() runs from a string.

    CPython marks an interrupt that leaves such code as unhandled for good: however docq then
    handles it, the process dies by SIGINT at exit (-2 to its parent) instead of exiting 130.
    dataclasses and namedtuple make their methods that way, so a model load (it imports) is
    often there. Then the signal is sent again 20 ms later, until it lands outside (at most
    ``_DEFER_LIMIT`` times)."""
    global _deferred
    f = frame
    while f is not None and f.f_back is not None:  # the outermost frame may be ``python -c`` code
        if f.f_code.co_filename == "<string>" and _deferred < _DEFER_LIMIT:
            import os
            import signal
            import threading

            _deferred += 1
            timer = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
            return
        f = f.f_back
    _deferred = 0
    raise KeyboardInterrupt


def on_ctrl_c(signum, frame) -> None:
    """docq's SIGINT handler while a command runs (``cli.common.handle_errors``): ``interrupt``."""
    interrupt(frame)
