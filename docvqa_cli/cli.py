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


# --- docq batch (issue 6) ------------------------------------------------------------------

@main.command()
@click.argument("questions_file", metavar="QUESTIONS", type=click.Path(dir_okay=False))
@click.argument("docs", nargs=-1, required=True, metavar="DOCS...")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Append records to this file and resume from it: pairs already in it are skipped.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Record format (default: csv for an -o ending in .csv, else jsonl).")
@click.option("--overwrite", is_flag=True, help="Start -o over instead of resuming.")
@click.option("--jobs", type=click.IntRange(0, 64), default=None,
              help="Workers that render and OCR the next documents while the model answers "
                   "(0: none; default: a quarter of the CPU cores, 1 to 4).")
@click.option("--progress", is_flag=True, help="Show progress on stderr even when it is not a terminal.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary on stderr.")
@click.option("--model", default=None, help="Hub id or local folder (default: chosen for the device).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--quant", type=click.Choice(["auto", "4bit", "8bit", "none"]), default="auto", show_default=True,
              help="Quantisation on CUDA (auto: 4bit on CUDA, none on CPU).")
@click.option("--keep", type=float, default=0.5, show_default=True, help="Fraction of tiles the model sees, in (0, 1].")
@click.option("--prompt", default=None, help="Prompt template: a name from prompts/ or a file path.")
@click.option("--max-new-tokens", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code (off by default).")
@document_options
@handle_errors
def batch(questions_file, docs, output, fmt, overwrite, jobs, progress, quiet, model, device, quant,
          keep, prompt, max_new_tokens, trust_remote_code, pages_spec, password, dpi, ocr_engine, ocr_lang):
    """Answer every question of QUESTIONS over every document of DOCS, resumably.

    QUESTIONS: a text file (one question a line, ids q1, q2, ...), or JSONL / CSV with id
    and question. DOCS: files, folders (recursive), globs, or - to read paths from stdin.
    """
    from docvqa_cli import batch as batch_mod
    from docvqa_cli import documents
    from docvqa_cli.errors import UsageError

    if not 0 < keep <= 1:
        raise UsageError("--keep must be in (0, 1]")
    if overwrite and not output:
        raise UsageError("--overwrite needs -o FILE")
    questions = batch_mod.read_questions(questions_file)
    paths = batch_mod.find_documents(docs)
    if not paths:
        raise UsageError("DOCS: no documents found")
    jobs = batch_mod.DEFAULT_JOBS if jobs is None else jobs
    fmt = fmt or ("csv" if output and output.lower().endswith(".csv") else "jsonl")
    out = batch_mod.Output(output, fmt, overwrite) if output else batch_mod.StreamOutput(sys.stdout)
    load = functools.partial(documents.load, pages=documents.parse_pages(pages_spec), dpi=dpi,
                             password=password, ocr=ocr_engine, ocr_lang=ocr_lang)
    try:
        summary = batch_mod.run(
            questions, paths, load=load, output=out, serialiser=batch_mod.Serialiser(fmt), keep=keep, jobs=jobs,
            answerer=batch_mod.model_answerer(model, device, quant, prompt, trust_remote_code, max_new_tokens),
            model_name=model, progress=not quiet and (progress or sys.stderr.isatty()),
        )
    finally:
        out.close()
    if not quiet:
        click.echo(f"docq: {summary.line()}", err=True)
    if summary.interrupted:
        if output:
            click.echo(f"docq: interrupted; {output} holds every finished record. To resume, run the same "
                       f"command again:\n  {batch_mod.resume_hint()}", err=True)
        else:
            click.echo("docq: interrupted; without -o FILE there is nothing to resume from", err=True)
        return ExitCode.ctrl_c
    return ExitCode.partial if summary.job_has_errors else ExitCode.ok
