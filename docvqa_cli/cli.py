"""The ``docq`` command: Click commands only. Parse, check, call, write, return a code.

All logic lives in the step modules; every ``DocqError`` becomes one line on stderr and
its exit code in ``handle_errors``. Only records go to stdout.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

import click

from docvqa_cli import __version__
from docvqa_cli.errors import DocqError, ExitCode


def console(stderr: bool = True):
    """A rich console: colour only on a terminal and never with NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not stream.isatty()
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=True)


def handle_errors(fn):
    """Turn DocqError into one line on stderr and its exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = bool((ctx.find_root().params or {}).get("debug"))
        try:
            code = fn(*args, **kwargs)
        except DocqError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"docq: error: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("docq: interrupted", err=True)
            ctx.exit(int(ExitCode.ctrl_c))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # an unexpected failure: one line, the rest with --debug
            if debug:
                traceback.print_exc()
            click.echo(
                f"docq: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                err=True,
            )
            ctx.exit(int(ExitCode.partial))
        ctx.exit(int(code or ExitCode.ok))

    return wrapper


# --- options shared by several commands --------------------------------------------------

def document_options(fn):
    """--pages, --password, --dpi, --ocr, --ocr-lang: how a document becomes pages."""
    from docvqa_cli.documents import DEFAULT_DPI
    from docvqa_cli.ocr import DEFAULT_ENGINE, ENGINES

    fn = click.option("--ocr-lang", default="eng", show_default=True,
                      help="Tesseract language(s), e.g. eng+deu.")(fn)
    fn = click.option("--ocr", "ocr_engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE,
                      show_default=True, help="OCR engine for pages without a text layer.")(fn)
    fn = click.option("--dpi", type=click.IntRange(36, 1200), default=DEFAULT_DPI,
                      show_default=True, help="Render resolution for PDF pages.")(fn)
    fn = click.option("--password", default=None, help="Password of an encrypted PDF.")(fn)
    fn = click.option("--pages", "pages_spec", default=None,
                      help="Pages to read, 1-based, e.g. 1-3,7 (default: all).")(fn)
    return fn


def load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang):
    """Read DOC (a path, or - for stdin bytes) into pages."""
    from docvqa_cli import documents

    data = None
    if doc == "-":
        data = sys.stdin.buffer.read()
        doc = "<stdin>"
    return documents.load(
        doc,
        pages=documents.parse_pages(pages_spec),
        dpi=dpi,
        password=password,
        ocr=ocr_engine,
        ocr_lang=ocr_lang,
        data=data,
    )


# --- the command group ---------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="docq")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """docq: answer questions about PDFs and scans, with the box that proves each answer."""


@main.command()
@handle_errors
def doctor():
    """Check what this machine has for docq, and how to fix what is missing."""
    from docvqa_cli import doctor as doctor_mod

    checks = doctor_mod.run_checks()
    out = console(stderr=False)
    for check in checks:
        mark = "OK     " if check.ok else ("missing" if check.required else "absent ")
        style = "green" if check.ok else ("red" if check.required else "yellow")
        out.print(f"[{style}]{mark}[/] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            out.print(f"        fix: {check.fix}")
    return ExitCode.ok if all(c.ok or not c.required for c in checks) else ExitCode.environment


# ask / explain / ground / batch commands are added below by their issues.


@main.command()
@click.argument("doc")
@click.argument("question")
@click.option("--keep", type=float, default=0.5, show_default=True,
              help="Fraction of each document's tiles to keep, in (0, 1].")
@click.option("--tile-px", type=click.IntRange(64, 4096), default=512, show_default=True,
              help="Tile size in rendered pixels.")
@click.option("--max-tiles", type=click.IntRange(1, 256), default=12, show_default=True,
              help="Most tiles per page.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for people, or one JSON object for machines.")
@click.option("-o", "--output", default=None,
              help="Draw the kept tiles: a .png file, or a folder for one PNG per page.")
@document_options
@handle_errors
def explain(doc, question, keep, tile_px, max_tiles, fmt, output, pages_spec, password, dpi, ocr_engine, ocr_lang):
    """Show which tiles each page keeps for QUESTION, and why (no model needed)."""
    import json

    from docvqa_cli import explain as explain_mod
    from docvqa_cli.errors import UsageError

    if not 0 < keep <= 1:
        raise UsageError(f"--keep must be in (0, 1], not {keep:g}")
    if output:
        explain_mod.check_output(output)
    pages = load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang)
    result = explain_mod.explain(doc, question, pages, keep=keep, tile_px=tile_px, max_tiles=max_tiles)
    if fmt == "json":
        click.echo(json.dumps(explain_mod.to_json(result), ensure_ascii=False))
    else:
        explain_mod.print_table(result, console(stderr=False))
    if output:
        for path in explain_mod.draw(result, output):
            click.echo(f"docq: wrote {path}", err=True)
    return ExitCode.ok
