"""Prompt templates: plain text with ``{question}``, chosen by ``--prompt NAME|PATH``.

A NAME is looked up in the checkout's ``prompts/`` folder (where users read and edit them),
then in the copy shipped inside the package (``docvqa_cli/data/prompts/``, package data), so
that a non-editable install finds them too. A test keeps the two copies identical. A PATH
(anything naming an existing file, or containing a path separator or ending in ``.txt``)
is read as is.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from docvqa_cli.errors import UsageError

DEFAULT = "default"
PLACEHOLDER = "{question}"
REPO_DIR = Path(__file__).resolve().parent.parent / "prompts"


def _packaged_dir():
    return resources.files("docvqa_cli") / "data" / "prompts"


def names() -> list[str]:
    """The names of the built-in prompts."""
    found = set()
    for folder in (REPO_DIR, _packaged_dir()):
        try:
            found.update(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))
        except (FileNotFoundError, NotADirectoryError, OSError):
            continue
    return sorted(found)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or (os.altsep or os.sep) in spec or spec.endswith(".txt") or Path(spec).is_file()


def load(spec: str | None = None) -> str:
    """The template text for ``--prompt`` (a name or a path); checked for ``{question}``."""
    spec = spec or DEFAULT
    if _looks_like_path(spec):
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--prompt {spec}: cannot read the file ({exc.__class__.__name__})") from None
    else:
        text = None
        for folder in (REPO_DIR, _packaged_dir()):
            candidate = folder / f"{spec}.txt"
            try:
                if candidate.is_file():
                    text = candidate.read_text(encoding="utf-8")
                    break
            except OSError:
                continue
        if text is None:
            raise UsageError(f"--prompt {spec}: no such prompt; built in: {', '.join(names())} (or give a file path)")
    if PLACEHOLDER not in text:
        raise UsageError(f"--prompt {spec}: the template has no {PLACEHOLDER} placeholder")
    return text


def render(template: str, question: str) -> str:
    """The prompt for one question (plain replacement, so other braces in a template are kept)."""
    return template.replace(PLACEHOLDER, question.strip()).strip()
