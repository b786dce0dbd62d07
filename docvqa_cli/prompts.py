"""Prompt templates: plain text with ``{question}``, chosen by ``--prompt NAME|PATH``.

A NAME is looked up in the checkout's ``prompts/`` folder (where users read and edit them),
then in the copy shipped inside the package (``docvqa_cli/data/prompts/``, package data), so
that a non-editable install finds them too. A test keeps the two copies identical. A PATH
(anything naming an existing file, or containing a path separator or ending in ``.txt``)
is read as is.

A template may begin with setting lines, ``# max_new_tokens: 24`` and ``# stop: newline``
(or ``eos``): how many tokens an answer may take, and whether decoding stops at the first
line break after some text (short answers) or only at the model's end token (answers of
several lines, such as the grounded prompt's box line). ``settings`` reads them; ``render``
leaves them out of the prompt. Other ``#`` lines are prompt text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from docvqa_cli.errors import UsageError
from docvqa_cli.options import DEFAULT_PROMPT

DEFAULT = DEFAULT_PROMPT
PLACEHOLDER = "{question}"
REPO_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_MAX_NEW_TOKENS = 32  # when neither the template nor --max-new-tokens says
STOPS = ("eos", "newline")
_SETTING = re.compile(r"^#\s*(max_new_tokens|stop)\s*:\s*(\S+)\s*$")


@dataclass(frozen=True)
class Settings:
    """What a template declares about decoding (None: it does not say)."""

    max_new_tokens: int | None = None
    stop: str = "eos"  # "newline": also stop at the first line break after some text


def _split_settings(template: str) -> tuple[dict, str]:
    """The leading setting lines (as a dict) and the rest of the template."""
    lines = template.splitlines(keepends=True)
    found = {}
    n = 0
    for line in lines:
        m = _SETTING.match(line.strip())
        if not m:
            break
        found[m.group(1)] = m.group(2)
        n += 1
    return found, "".join(lines[n:])


def settings(template: str) -> Settings:
    """The decoding settings a template declares in its first lines."""
    found, _ = _split_settings(template)
    mnt = found.get("max_new_tokens")
    stop = found.get("stop", "eos").lower()
    if mnt is not None and (not mnt.isdigit() or int(mnt) < 1):
        raise UsageError(f"prompt setting max_new_tokens must be a positive integer, not {mnt!r}")
    if stop not in STOPS:
        raise UsageError(f"prompt setting stop must be one of {', '.join(STOPS)}, not {stop!r}")
    return Settings(int(mnt) if mnt is not None else None, stop)


def max_new_tokens(template: str, override: int | None = None) -> int:
    """--max-new-tokens if given, else the template's own, else DEFAULT_MAX_NEW_TOKENS."""
    if override is not None:
        return int(override)
    return settings(template).max_new_tokens or DEFAULT_MAX_NEW_TOKENS


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
    try:
        settings(text)
    except UsageError as exc:
        raise UsageError(f"--prompt {spec}: {exc}") from None
    return text


def render(template: str, question: str) -> str:
    """The prompt for one question (plain replacement, so other braces in a template are kept)."""
    _, body = _split_settings(template)
    return body.replace(PLACEHOLDER, question.strip()).strip()
