"""One exit-code enum and the exceptions that carry it (after OCRmyPDF's exceptions.py).

Every exception says what went wrong and, where it can, what the user should do. Only
``docvqa_cli.cli`` turns them into a line on stderr and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    ok = 0
    partial = 1  # some records carry an error (or the one input was bad)
    usage = 2  # bad options or arguments
    environment = 3  # this machine cannot run the model: say what to install
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


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters), for error records."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- running out of (GPU) memory: one policy for ask, batch and the Ray engine ----------------

OOM_RETRY_FACTORS = (0.5, 0.25)  # of --keep: the tiles a question retries with after running out of memory
OOM_GAVE_UP = "out of memory, also with fewer tiles"  # starts the record of a question that still ran out


def is_oom(error) -> bool:
    """Whether an exception, or an error record's text, is running out of (GPU) memory."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return "OutOfMemoryError" in text or "out of memory" in text.lower()


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
