"""``docq batch``: every question over every document, resumably."""

from __future__ import annotations

import functools
import sys

import click

from docvqa_cli import formats
from docvqa_cli.cli.common import (answer_options, document_keywords, handle_errors, model_options, output_options,
                                   read_options, show_options)
from docvqa_cli.errors import ExitCode


@click.command()
@click.argument("questions_file", metavar="QUESTIONS", type=click.Path(dir_okay=False))
@click.argument("docs", nargs=-1, required=True, metavar="DOCS...")
@output_options("output", "format", "csv_raw", "bom",
                output={"help": "Append records to this file and resume from it: pairs already in it are skipped."},
                format={"type": click.Choice(formats.names(resumable=True))})
@click.option("--overwrite", is_flag=True, help="Start -o over instead of resuming.")
@click.option("--retry-errors", is_flag=True,
              help="On resume, answer again the pairs whose record in -o carries an error (the new record "
                   "is appended and is the one that counts).")
@click.option("--jobs", type=click.IntRange(0, 64), default=None,
              help="Workers that render and OCR the next documents while the model answers "
                   "(0: none; default: a quarter of the CPU cores, 1 to 4).")
@show_options()
@model_options()
@answer_options()
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False), default=None,
              help="Also write, into this folder, a PDF copy of each document with its answers highlighted.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: Ray Data tasks load documents and one model actor per GPU "
                   "answers (pip install 'docq[ray]').")
@click.option("--address", default=None, metavar="ADDR",
              help="--engine ray: the Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
                   "default: start Ray on this machine.")
@read_options()
@handle_errors
def batch(questions_file, docs, out, overwrite, retry_errors, jobs, show, model, answer, annotate_dir, engine, address, read):
    """Answer every question of QUESTIONS over every document of DOCS, resumably.

    QUESTIONS: a text file (one question a line, ids q1, q2, ...), or JSONL / CSV with id
    and question, and optionally type (amount, date, number, percent, id, duration, time,
    text; else inferred from the question). DOCS: files, folders (recursive), globs, or - to read paths from stdin.
    """
    from docvqa_cli import batch as batch_mod
    from docvqa_cli import pipeline
    from docvqa_cli.errors import UsageError
    from docvqa_cli.reading import ocr
    from docvqa_cli.records import check_output

    output, quiet = out.output, show.quiet
    if overwrite and not output:
        raise UsageError("--overwrite needs -o FILE")
    if retry_errors and not output:
        raise UsageError("--retry-errors needs -o FILE (the output to resume)")
    if address and engine != "ray":
        raise UsageError("--address needs --engine ray")
    if engine == "ray" and ":" in model.device:
        raise UsageError(f"--device {model.device} with --engine ray: Ray gives each model actor its own GPU; "
                         "use --device cuda (or auto)")
    ocr.check(read.ocr, read.ocr_lang)
    questions = batch_mod.read_questions(questions_file)
    unreadable: list[str] = []  # folders that could not be read: said on stderr, and exit 1 at the end
    paths = batch_mod.find_documents(docs, problems=unreadable)
    if annotate_dir:  # checked before any work; its copies are not documents of the next run
        paths = _check_annotate_dir(annotate_dir, paths)
    if not paths:
        raise UsageError("DOCS: no documents found")
    jobs = batch_mod.DEFAULT_JOBS if jobs is None else jobs
    if output:
        batch_mod.check_target(output)  # not a pipe or device (/dev/stdout); some free space
        check_output(output, "-o", inputs=[questions_file, *paths])
    fmt = formats.get(formats.for_output(output, out.format), csv_raw=out.csv_raw, csv_bom=out.bom)
    if out.bom and fmt.name != "csv":
        raise UsageError(f"--bom is for CSV (the format here is {fmt.name}); add --format csv or an -o FILE.csv")
    from docvqa_cli.reading.reader import TimedLoader

    load = TimedLoader(read.doc_timeout, **document_keywords(read))  # --doc-timeout, in worker processes
    answerer = batch_mod.model_answerer(functools.partial(pipeline.open_backend, model, answer.visual), answer,
                                        {q.id: q.type for q in questions if q.type})
    runner = None
    if engine == "local":
        load.start()  # this thread renders the kept tiles (in a worker, under the limit): start it while the model loads
    if engine == "ray":
        from docvqa_cli.batch import ray as ray_engine

        runner = ray_engine.RayEngine(load, answerer, address=address, device=model.device, model_name=model.model,
                                      say=None if quiet else lambda msg: click.echo(f"docq: {msg}", err=True))
    sink = batch_mod.Output(output, fmt, overwrite) if output else batch_mod.StreamOutput(sys.stdout, fmt)
    if not address:  # before any document work (a cluster's nodes have their own caches)
        from docvqa_cli import models

        try:
            models.require(model)
        except BaseException:
            _close_quietly(sink, load)
            raise
    try:
        summary = batch_mod.run(
            questions, paths, load=load, output=sink, keep=answer.keep, jobs=jobs, annotate_dir=annotate_dir,
            password=read.password, answerer=answerer,
            engine=runner, model_name=model.model, retry_errors=retry_errors,
            progress=not quiet and (show.progress or sys.stderr.isatty()),
        )
    except BaseException:  # Ctrl-C or an error in flight: a close that fails must not take its place
        _close_quietly(sink, load)
        raise
    if summary.interrupted:
        _close_quietly(sink, load)
    else:
        load.close()
        sink.close()
    if not quiet:
        click.echo(f"docq: {summary.line()}", err=True)
    if summary.interrupted:
        if output:
            click.echo(f"docq: interrupted; {output} holds every finished record. To resume, run the same "
                       f"command again:\n  {batch_mod.resume_hint()}", err=True)
        else:
            click.echo("docq: interrupted; without -o FILE there is nothing to resume from", err=True)
        return ExitCode.ctrl_c
    if unreadable:
        click.echo(f"docq: {len(unreadable)} folder(s) could not be read (named above); their documents are "
                   "not in the output", err=True)
    return ExitCode.partial if summary.job_has_errors or unreadable else ExitCode.ok


def _close_quietly(*things) -> None:
    """Close each of ``things`` while Ctrl-C or an error is in flight: a close that fails is one
    line on stderr, never the error the user sees in place of the first (Ctrl-C exits 130)."""
    for thing in things:
        try:
            thing.close()
        except Exception as exc:
            click.echo(f"docq: while stopping: {exc}", err=True)


def _check_annotate_dir(folder: str, paths: list[str]) -> list[str]:
    """Refuse an --annotate folder that cannot be written (before the model loads); return
    ``paths`` without the documents inside it (copies of an earlier run)."""
    import os

    from docvqa_cli.errors import UsageError

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--annotate {folder}: is a file; give a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--annotate {folder}: cannot make the folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--annotate {folder}: cannot write in it; give another folder")
    inside = os.path.realpath(folder) + os.sep
    kept = [p for p in paths if p == "-" or not os.path.realpath(p).startswith(inside)]
    if len(kept) < len(paths):
        click.echo(f"docq: --annotate {folder}: {len(paths) - len(kept)} file(s) in it left out "
                   f"(annotated copies are not documents to answer)", err=True)
    if not kept:
        raise UsageError("DOCS: no documents found outside the --annotate folder")
    return kept
