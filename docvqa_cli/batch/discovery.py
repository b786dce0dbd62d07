"""Which documents a ``docq batch`` job reads: files, folders (recursive), globs and - (paths
on stdin), in a stable order, without repeats. See ARCHITECTURE.md."""

from __future__ import annotations

import glob
import os
import sys
from typing import IO, Callable, Sequence

from docvqa_cli.reading.documents import IMAGE_EXTENSIONS, sniff

DOCUMENT_EXTENSIONS = {".pdf"} | IMAGE_EXTENSIONS


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
    specs: Sequence[str], stdin: IO[str] | None = None, warn: Callable[[str], None] = None,
    problems: list[str] | None = None,
) -> list[str]:
    """Document paths, in a stable order and without repeats, from files, folders, globs and -.

    A file named on the command line (or on stdin) is always taken; folders are walked
    recursively (hidden entries skipped) and globs expanded, keeping documents only
    (``is_document``). A path that does not exist is kept: it becomes error records, and so
    does a symbolic link found in a folder that leads nowhere (a loop, a missing target).
    Nothing is dropped silently: a folder that cannot be read gets a line through ``warn``
    and is appended to ``problems`` (the caller makes the exit code say so); files that are
    not documents get one summary line (how many, and one of them).
    """
    warn = warn or (lambda msg: print(f"docq: {msg}", file=sys.stderr))
    problems = problems if problems is not None else []
    found: dict[str, None] = {}
    skipped: list[str] = []

    def add(path: str) -> None:
        found.setdefault(path, None)

    def unreadable(exc: OSError) -> None:
        folder = exc.filename or "?"
        warn(f"{folder}: cannot read this folder ({exc.strerror or exc}); its documents are left out")
        problems.append(folder)

    def keep_or_skip(path: str) -> None:
        if is_document(path) or (os.path.islink(path) and not os.path.exists(path)):
            add(path)  # a broken link becomes error records that say why (a loop, a missing target)
        else:
            skipped.append(path)

    def walk(folder: str) -> None:
        for root, dirs, files in os.walk(folder, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                keep_or_skip(os.path.join(root, name))

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
                else:
                    keep_or_skip(m)

    for spec in specs:
        if spec == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    take(line, literal=True)
        else:
            take(spec, literal=False)
    if skipped:
        warn(f"{len(skipped)} file(s) in the folders and globs given are not documents (PDF or image) and are "
             f"left out, e.g. {skipped[0]}")
    return list(found)
