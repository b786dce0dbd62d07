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
