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


def load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang, data=None):
    """Read DOC (a path, or - for stdin bytes, or ``data`` already read) into pages."""
    from docvqa_cli import documents, ocr

    ocr.check(ocr_engine, ocr_lang)
    if doc == "-":
        data = sys.stdin.buffer.read() if data is None else data
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
@click.option("--tie", "tie_dir", type=click.Path(file_okay=False), default=None,
              help="Also check a folder of TIE adapters (from docq tune).")
@handle_errors
def doctor(tie_dir):
    """Check what this machine has for docq, and how to fix what is missing."""
    from docvqa_cli import doctor as doctor_mod

    checks = doctor_mod.run_checks(tie_dir)
    out = console(stderr=False)
    for check in checks:
        mark = "OK     " if check.ok else ("missing" if check.required else "absent ")
        style = "green" if check.ok else ("red" if check.required else "yellow")
        out.print(f"[{style}]{mark}[/] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            out.print(f"        fix: {check.fix}")
    return ExitCode.ok if all(c.ok or not c.required for c in checks) else ExitCode.environment


# ask / explain / ground / batch commands are added below by their issues.


# --- options and helpers of the commands that run a model ------------------------------------

def model_options(fn):
    """--model, --device, --quant, --trust-remote-code, --tie: which model, where, how loaded."""
    fn = click.option("--tie", "tie_dir", type=click.Path(file_okay=False), default=None,
                      help="A folder of trained TIE adapters (docq tune) to condition the vision encoder.")(fn)
    fn = click.option("--trust-remote-code", is_flag=True,
                      help="Allow the model's own code from the hub to run (off: documents and models are untrusted).")(fn)
    fn = click.option("--quant", type=click.Choice(["auto", "4bit", "8bit", "none"]), default="auto",
                      show_default=True, help="auto: 4bit NF4 on CUDA, none on the CPU.")(fn)
    fn = click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)(fn)
    fn = click.option("--model", default=None,
                      help="Hub id or local folder (default: Qwen/Qwen3-VL-4B-Instruct on CUDA, "
                           "HuggingFaceTB/SmolVLM-256M-Instruct on the CPU).")(fn)
    return fn


def answer_options(fn):
    """--keep, --prompt, --max-new-tokens, --visual: how each question is answered."""
    fn = click.option("--visual/--no-visual", "use_visual", default=None,
                      help="Add the model's visual relevance score to tile selection "
                           "(default: on with --tie, off otherwise).")(fn)
    fn = click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=None,
                      help="Most tokens an answer may take (default: the prompt's own "
                           "'# max_new_tokens:' line, else 32).")(fn)
    fn = click.option("--prompt", "prompt_spec", default="default", show_default=True,
                      help="A prompt name from prompts/ (default, grounded) or a template file with {question}.")(fn)
    fn = click.option("--keep", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
                      help="Fraction of each document's tiles the model sees, in (0, 1].")(fn)
    return fn


def speed_options(fn):
    """--batch-size, --decode: how many questions share a forward pass, and the decode loop."""
    fn = click.option("--decode", type=click.Choice(["auto", "plain", "static"]), default="auto", show_default=True,
                      help="static: transformers' static KV cache, compiled on CUDA; plain: the dynamic "
                           "cache. auto: static on CUDA, plain on the CPU.")(fn)
    fn = click.option("--batch-size", type=click.IntRange(1, 256), default=None,
                      help="Questions answered in one padded forward (default: by free GPU memory on "
                           "CUDA, up to 16; 4 on the CPU).")(fn)
    return fn


def output_options(fn):
    """--format, -o, --csv-raw: where and how records are written."""
    fn = click.option("--csv-raw", is_flag=True,
                      help="CSV: write cells as they are, without the spreadsheet formula guard.")(fn)
    fn = click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
                      help="Write records here, not stdout.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "table"]), default=None,
                      help="Record format (default: csv for an -o ending in .csv, else jsonl).")(fn)
    return fn


# --- ask (issue 4) ---------------------------------------------------------------------------

@main.command()
@click.argument("doc")
@click.argument("questions", nargs=-1, required=True)
@model_options
@answer_options
@speed_options
@output_options
@click.option("--annotate", "annotate_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a copy of DOC as PDF with each answer's boxes highlighted.")
@document_options
@handle_errors
def ask(doc, questions, model, device, quant, trust_remote_code, tie_dir, keep, prompt_spec, max_new_tokens,
        use_visual, batch_size, decode, fmt, output, csv_raw, annotate_out, pages_spec, password, dpi, ocr_engine,
        ocr_lang):
    """Answer QUESTION(s) about DOC (a file, or - for stdin): one record per question."""
    from docvqa_cli import pipeline, prompts
    from docvqa_cli.errors import UsageError
    from docvqa_cli.records import check_output, format_for, get_writer

    if any(not q.strip() for q in questions):
        raise UsageError("QUESTION: an empty question; write the question, e.g. \"What is the total amount?\"")
    for path, flag in ((output, "-o"), (annotate_out, "--annotate")):
        if path:
            check_output(path, flag, inputs=[doc])
    if output and annotate_out and os.path.realpath(output) == os.path.realpath(annotate_out):
        raise UsageError(f"-o and --annotate are the same file ({output})")
    fmt = format_for(output, fmt)
    template = prompts.load(prompt_spec)
    data = sys.stdin.buffer.read() if doc == "-" else None
    pages = load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang, data=data)
    backend, visual = pipeline.open_backend(model, device, quant, trust_remote_code, tie_dir, use_visual, decode)
    answerer = pipeline.Answerer.build(backend, template, max_new_tokens, visual, batch_size)
    stream = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    failed = False
    records = []
    try:
        writer = get_writer(fmt, stream, csv_raw=csv_raw)
        numbered = [(f"q{i}", q) for i, q in enumerate(questions, 1)]
        for record in answerer.answer(pages, numbered, keep, doc=doc):
            writer.write(record)
            records.append(record)
            failed = failed or record.error is not None
        writer.close()
    finally:
        if output:
            stream.close()
    if annotate_out:
        from docvqa_cli import annotate

        annotate.write(doc, records, annotate_out, password=password, data=data)
    return ExitCode.partial if failed else ExitCode.ok


@main.command()
@click.argument("doc")
@click.argument("text")
@document_options
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Print at most this many matches (default: all).")
@handle_errors
def ground(doc, text, pages_spec, password, dpi, ocr_engine, ocr_lang, limit):
    """Where TEXT is printed in DOC: pages and boxes as JSON, best first (no model).

    Exit code 1, with the object and an empty "matches", when TEXT is not found.
    """
    import json

    from docvqa_cli import grounding

    if not text.strip():
        raise click.BadParameter("TEXT is empty", param_hint="TEXT")
    pages = load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang)
    matches = grounding.find_all(text, pages)[:limit]
    click.echo(json.dumps(grounding.ground_result(doc, text, matches), ensure_ascii=False))
    if not matches:
        click.echo(f"docq: {text!r} not found in {doc}", err=True)
        return ExitCode.partial
    return ExitCode.ok


# --- tune (issue 7) ----------------------------------------------------------------------------

@main.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Hub id or local folder of the base model (kept frozen).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the adapters (tie_config.json, adapters.safetensors), checkpoints and metrics.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Optimizer steps (default: --epochs passes).")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True,
              help="Passes over the training records (when --steps is not given).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-4, show_default=True,
              help="AdamW learning rate of the adapters.")
@click.option("--every", type=click.IntRange(1), default=1, show_default=True,
              help="An adapter after every N-th vision encoder layer (1: all layers).")
@click.option("--relevance-weight", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Weight of the tile-relevance loss (0: language-model loss only).")
@click.option("--heldout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of the records held out and reported at the end.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=50, show_default=True,
              help="Save OUT/checkpoint every N steps (0: only at the end).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Go on from OUT/checkpoint if present.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the held-out split, the order of the records and the adapters' start.")
@click.option("--keep", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Fraction of each document's tiles the model sees while training, as in docq ask.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--quant", type=click.Choice(["auto", "4bit", "8bit", "none"]), default="auto", show_default=True,
              help="The frozen base: auto is 4bit NF4 on CUDA (adapters in bf16), none on the CPU.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code from the hub to run.")
@click.option("--dpi", type=click.IntRange(36, 1200), default=150, show_default=True,
              help="Render resolution for PDF pages.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar with the loss on stderr (default: only when stderr is a terminal).")
@handle_errors
def tune(data, model, out_dir, steps, epochs, lr, every, relevance_weight, heldout, checkpoint_every, resume, seed,
         keep, device, quant, trust_remote_code, dpi, progress):
    """Train TIE adapters on DATA.jsonl records {doc, question, answer, page?}; prints a JSON report."""
    import json

    from docvqa_cli import tune as tune_mod
    from docvqa_cli.vlm.load import load_backend

    options = tune_mod.TuneOptions(steps=steps, epochs=epochs, lr=lr, every=every, relevance_weight=relevance_weight,
                                   heldout=heldout, checkpoint_every=checkpoint_every, resume=resume, seed=seed,
                                   keep=keep, dpi=dpi)
    tune_mod.read_examples(data)  # bad data fails before the model loads
    backend = load_backend(model, device=device, quant=quant, trust_remote_code=trust_remote_code)
    show = progress if progress is not None else sys.stderr.isatty()
    report = tune_mod.tune(data, backend, out_dir, options, progress=show)
    click.echo(json.dumps(report))
    return ExitCode.ok


# --- explain (issue 3) -------------------------------------------------------------------------

@main.command()
@click.argument("doc")
@click.argument("question")
@click.option("--keep", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Fraction of each document's tiles to keep, in (0, 1].")
@click.option("--tile-px", type=click.IntRange(64, 4096), default=None,
              help="Tile size in rendered pixels (default 512, or the model's own with --model/--tie).")
@click.option("--max-tiles", type=click.IntRange(1, 256), default=None,
              help="Most tiles per page (default 12, or the model's own with --model/--tie).")
@click.option("--model", default=None,
              help="Also score with this model's visual relevance (loads it; default: no model).")
@click.option("--tie", "tie_dir", type=click.Path(file_okay=False), default=None,
              help="Score with these trained TIE adapters' attention (loads --model, else the base model the adapters name).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for people, or one JSON object for machines.")
@click.option("-o", "--output", default=None,
              help="Draw the kept tiles: a .png file, or a folder for one PNG per page.")
@document_options
@handle_errors
def explain(doc, question, keep, tile_px, max_tiles, model, tie_dir, device, fmt, output, pages_spec, password, dpi,
            ocr_engine, ocr_lang):
    """Show which tiles each page keeps for QUESTION, and why (no model needed).

    With --model or --tie the model is loaded and its visual relevance score joins the
    others, on the model's own tiles, as `docq ask` would use them."""
    import json

    from docvqa_cli import explain as explain_mod

    if output:
        explain_mod.check_output(output)
    pages = load_pages(doc, pages_spec, password, dpi, ocr_engine, ocr_lang)
    visual = None
    if model or tie_dir:
        from docvqa_cli import pipeline

        backend, visual = pipeline.open_backend(model, device, "auto", False, tie_dir, True)
        tile_px, max_tiles = tile_px or backend.tile_px, max_tiles or backend.max_tiles
    result = explain_mod.explain(doc, question, pages, keep=keep, tile_px=tile_px or 512,
                                 max_tiles=max_tiles or 12, visual=visual)
    if fmt == "json":
        click.echo(json.dumps(explain_mod.to_json(result), ensure_ascii=False))
    else:
        explain_mod.print_table(result, console(stderr=False))
    if output:
        for path in explain_mod.draw(result, output):
            click.echo(f"docq: wrote {path}", err=True)
    return ExitCode.ok


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
@model_options
@answer_options
@speed_options
@click.option("--csv-raw", is_flag=True,
              help="CSV: write cells as they are, without the spreadsheet formula guard.")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False), default=None,
              help="Also write, into this folder, a PDF copy of each document with its answers highlighted.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: Ray Data tasks load documents and one model actor per GPU "
                   "answers (pip install 'docq[ray]').")
@click.option("--address", default=None, metavar="ADDR",
              help="--engine ray: the Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
                   "default: start Ray on this machine.")
@document_options
@handle_errors
def batch(questions_file, docs, output, fmt, overwrite, jobs, progress, quiet, model, device, quant,
          trust_remote_code, tie_dir, keep, prompt_spec, max_new_tokens, use_visual, batch_size, decode, csv_raw,
          annotate_dir, engine, address, pages_spec, password, dpi, ocr_engine, ocr_lang):
    """Answer every question of QUESTIONS over every document of DOCS, resumably.

    QUESTIONS: a text file (one question a line, ids q1, q2, ...), or JSONL / CSV with id
    and question. DOCS: files, folders (recursive), globs, or - to read paths from stdin.
    """
    from docvqa_cli import batch as batch_mod
    from docvqa_cli import documents, pipeline
    from docvqa_cli.errors import UsageError
    from docvqa_cli.records import check_output, format_for

    if overwrite and not output:
        raise UsageError("--overwrite needs -o FILE")
    if address and engine != "ray":
        raise UsageError("--address needs --engine ray")
    from docvqa_cli import ocr

    ocr.check(ocr_engine, ocr_lang)
    questions = batch_mod.read_questions(questions_file)
    paths = batch_mod.find_documents(docs)
    if not paths:
        raise UsageError("DOCS: no documents found")
    jobs = batch_mod.DEFAULT_JOBS if jobs is None else jobs
    if output:
        check_output(output, "-o", inputs=[questions_file, *paths])
    fmt = format_for(output, fmt)
    load = functools.partial(documents.load, pages=documents.parse_pages(pages_spec), dpi=dpi,
                             password=password, ocr=ocr_engine, ocr_lang=ocr_lang)
    answerer = batch_mod.model_answerer(
        functools.partial(pipeline.open_backend, model, device, quant, trust_remote_code, tie_dir, use_visual, decode),
        prompt_spec, max_new_tokens, batch_size)
    runner = None
    if engine == "ray":
        from docvqa_cli.batch import ray as ray_engine

        runner = ray_engine.RayEngine(load, answerer, address=address, device=device, model_name=model,
                                      say=None if quiet else lambda msg: click.echo(f"docq: {msg}", err=True))
    out = batch_mod.Output(output, fmt, overwrite) if output else batch_mod.StreamOutput(sys.stdout)
    try:
        summary = batch_mod.run(
            questions, paths, load=load, output=out, serialiser=batch_mod.Serialiser(fmt, csv_raw=csv_raw), keep=keep,
            jobs=jobs, annotate_dir=annotate_dir, password=password, answerer=answerer, engine=runner,
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
