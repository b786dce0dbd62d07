"""``docq ask``: answer questions about one document, one record per question."""

from __future__ import annotations

import os
import sys

import click

from docvqa_cli.cli.common import (answer_options, handle_errors, load_pages, model_options, output_options,
                                   read_options)
from docvqa_cli.errors import ExitCode


@click.command()
@click.argument("doc")
@click.argument("questions", nargs=-1, required=True)
@model_options()
@answer_options()
@output_options("format", "output", "csv_raw")
@click.option("--annotate", "annotate_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a copy of DOC as PDF with each answer's boxes highlighted.")
@read_options()
@handle_errors
def ask(doc, questions, model, answer, out, annotate_out, read):
    """Answer QUESTION(s) about DOC (a file, or - for stdin): one record per question."""
    from docvqa_cli import pipeline, prompts
    from docvqa_cli.errors import UsageError
    from docvqa_cli.records import check_output, format_for, get_writer

    if any(not q.strip() for q in questions):
        raise UsageError("QUESTION: an empty question; write the question, e.g. \"What is the total amount?\"")
    for path, flag in ((out.output, "-o"), (annotate_out, "--annotate")):
        if path:
            check_output(path, flag, inputs=[doc])
    if out.output and annotate_out and os.path.realpath(out.output) == os.path.realpath(annotate_out):
        raise UsageError(f"-o and --annotate are the same file ({out.output})")
    fmt = format_for(out.output, out.format)
    template = prompts.load(answer.prompt)
    data = sys.stdin.buffer.read() if doc == "-" else None
    pages = load_pages(doc, read, data=data)
    backend, visual = pipeline.open_backend(model, answer.visual, questions=len(questions))
    answerer = pipeline.Answerer.build(backend, template, answer.max_new_tokens, visual, answer.batch_size)
    stream = open(out.output, "w", encoding="utf-8", newline="") if out.output else sys.stdout
    failed = False
    records = []
    try:
        writer = get_writer(fmt, stream, csv_raw=out.csv_raw)
        numbered = [(f"q{i}", q) for i, q in enumerate(questions, 1)]
        for record in answerer.answer(pages, numbered, answer.keep, doc=doc):
            writer.write(record)
            records.append(record)
            failed = failed or record.error is not None
        writer.close()
    finally:
        if out.output:
            stream.close()
    if annotate_out:
        from docvqa_cli import annotate

        annotate.write(doc, records, annotate_out, password=read.password, data=data)
    return ExitCode.partial if failed else ExitCode.ok
