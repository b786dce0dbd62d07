"""``docq export``: records (JSONL or CSV, possibly from a resumed batch) as a wide table,
one row per document (no model)."""

from __future__ import annotations

import sys

import click

from docvqa_cli.cli.common import handle_errors, output_options
from docvqa_cli.errors import ExitCode


@click.command()
@click.argument("records_file", metavar="RECORDS", type=click.Path(dir_okay=False))
@click.option("--wide", is_flag=True, help="One row per document, one column per question id (required for now).")
@click.option("--fields", "fields_file", type=click.Path(dir_okay=False), default=None,
              help="A field file (the JSONL/CSV question file, with check entries): its question ids give the "
                   "columns and their order, its checks give check_<id> flag columns.")
@output_options("output", "csv_raw", "bom", output={"help": "Write the table here (CSV), not stdout."})
@click.option("--overwrite", is_flag=True, help="Replace -o if it already holds something.")
@handle_errors
def export(records_file, wide, fields_file, out, overwrite):
    """Turn RECORDS (docq batch's or ask's -o, JSONL or CSV) into a CSV table: one row per
    document, one column per question id holding its value (its answer when the type is
    text), with <id>_page and <id>_confidence columns, <id>_currency for amounts, and a
    check_<id> flag ("ok", "failed", "missing") per check of --fields.

    A resumed or killed batch gives one row per document: a torn last line is left out, and
    of a pair written twice the last record without an error counts. The table is written
    whole or not at all.
    """
    from docvqa_cli import checks, export as ex
    from docvqa_cli.cli.ask import _holds_something
    from docvqa_cli.errors import UsageError
    from docvqa_cli.records import check_output

    if not wide:
        raise UsageError("docq export needs --wide (one row per document); it is the only layout so far")
    inputs = [records_file, fields_file]
    if out.output:
        check_output(out.output, "-o", inputs=inputs)
        if not overwrite and _holds_something(out.output):
            raise UsageError(f"-o {out.output}: already exists; add --overwrite to replace it, or give another -o")
    elif overwrite:
        raise UsageError("--overwrite needs -o FILE")
    ids, types, flags = None, None, []
    if fields_file:
        from docvqa_cli.batch.questions import read_field_file

        questions, entries = read_field_file(fields_file)
        ids = [q.id for q in questions]
        types = {q.id: q.type for q in questions if q.type}
        flags = checks.compile_checks(entries, ids, fields_file)
    records = ex.read_records(records_file)
    table = ex.wide(records, ids, flags, types)
    text = ex.render_csv(table, raw=out.csv_raw, bom=out.bom)
    if out.output:
        ex.write_atomic(out.output, text)
        click.echo(f"docq: {len(table.rows)} documents, {len(table.columns)} columns -> {out.output}", err=True)
    else:
        sys.stdout.write(text)
    return ExitCode.ok
