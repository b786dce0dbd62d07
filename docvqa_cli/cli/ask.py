"""``docq ask``: answer questions about one document, one record per question."""

from __future__ import annotations

import os
import sys

import click

from docvqa_cli.cli.common import (Progress, answer_options, handle_errors, load_pages, model_options, open_model,
                                   output_options, read_options, show_options)
from docvqa_cli.errors import ExitCode
from docvqa_cli.options import TYPES


@click.command()
@click.argument("doc")
@click.argument("questions", nargs=-1, required=True)
@model_options()
@answer_options()
@output_options("format", "output", "csv_raw", "bom")
@click.option("--overwrite", is_flag=True, help="Replace -o if it already holds something (without it, docq refuses).")
@click.option("--annotate", "annotate_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a copy of DOC as PDF with each answer's boxes highlighted.")
@click.option("--type", "kind", type=click.Choice(TYPES), default=None,
              help="The type of value every QUESTION asks for; the record's value is read as this type "
                   "(default: inferred from each question).")
@read_options()
@show_options()
@handle_errors
def ask(doc, questions, model, answer, out, overwrite, annotate_out, kind, read, show):
    """Answer QUESTION(s) about DOC (a file, or - for stdin): one record per question."""
    from docvqa_cli import formats, models, prompts
    from docvqa_cli.errors import UsageError
    from docvqa_cli.records import check_output

    if any(not q.strip() for q in questions):
        raise UsageError("QUESTION: an empty question; write the question, e.g. \"What is the total amount?\"")
    for path, flag in ((out.output, "-o"), (annotate_out, "--annotate")):
        if path:
            check_output(path, flag, inputs=[doc])
    if out.output and annotate_out and os.path.realpath(out.output) == os.path.realpath(annotate_out):
        raise UsageError(f"-o and --annotate are the same file ({out.output})")
    if overwrite and not out.output:
        raise UsageError("--overwrite needs -o FILE")
    if out.output and not overwrite and _holds_something(out.output):
        raise UsageError(f"-o {out.output}: already exists; add --overwrite to replace it, or give another -o "
                         "(docq batch appends to its -o and resumes)")
    fmt = formats.get(formats.for_output(out.output, out.format), csv_raw=out.csv_raw, csv_bom=out.bom)
    if out.bom and fmt.name != "csv":
        raise UsageError(f"--bom is for CSV (the format here is {fmt.name}); add --format csv or an -o FILE.csv")
    template = prompts.load(answer.prompt)
    models.require(model)  # before any document work: fail fast when the model cannot be had
    from docvqa_cli import pipeline

    data = sys.stdin.buffer.read() if doc == "-" else None
    progress = Progress(show)
    pages = load_pages(doc, read, data=data, progress=progress)
    backend, visual = open_model(model, answer.visual, progress, questions=len(questions))
    numbered = [(f"q{i}", q) for i, q in enumerate(questions, 1)]
    answerer = pipeline.Answerer.build(backend, answer, visual,
                                       types={qid: kind for qid, _ in numbered} if kind else None,
                                       template=template)
    stream = open(out.output, "w", encoding="utf-8", newline="") if out.output else sys.stdout
    failed = False
    records = []
    try:
        writer = fmt.writer(stream)
        progress.status(f"answering {len(numbered)} question{'s' if len(numbered) != 1 else ''}")
        for record in answerer.answer(pages, numbered, answer.keep, doc=doc):
            writer.write(record)
            records.append(record)
            failed = failed or record.error is not None
            progress.status(f"answered {len(records)} of {len(numbered)}")
        progress.done()
        writer.close()
    finally:
        if out.output:
            stream.close()
    if annotate_out:
        from docvqa_cli import annotate

        annotate.write(doc, records, annotate_out, password=read.password, data=data)
    return ExitCode.partial if failed else ExitCode.ok


def _holds_something(path: str) -> bool:
    """A regular file with content: what ``ask -o`` never replaces without ``--overwrite``
    (an empty file, or a device such as /dev/null, is written to)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISREG(st.st_mode) and st.st_size > 0
