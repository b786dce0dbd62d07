"""``docq ground``: where a text is printed in a document (no model)."""

from __future__ import annotations

import click

from docvqa_cli.cli.common import Progress, handle_errors, load_pages, read_options, show_options
from docvqa_cli.errors import ExitCode
from docvqa_cli.options import DATE_ORDERS, TYPES


@click.command()
@click.argument("doc")
@click.argument("text")
@read_options()
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Print at most this many matches (default: all).")
@click.option("--type", "kind", type=click.Choice(TYPES), default=None,
              help="Also report, for each match, the value of this type read from the page's printed text "
                   "(\"2014-05-20\" finds \"the 20th day of May, 2014\" and reports 2014-05-20).")
@click.option("--date-order", type=click.Choice(DATE_ORDERS), default=None,
              help="How an ambiguous date such as 02/03/2024 reads when the document's other dates do not say.")
@show_options()
@handle_errors
def ground(doc, text, read, limit, kind, date_order, show):
    """Where TEXT is printed in DOC: pages and boxes as JSON, best first (no model).

    With --type, each match also has "value", "currency" and "value_note" (records' typed keys).
    Exit code 1, with the object and an empty "matches", when TEXT is not found.
    """
    import json

    from docvqa_cli import grounding

    if not text.strip():
        raise click.BadParameter("TEXT is empty", param_hint="TEXT")
    if len(text) > grounding.MAX_ANSWER:
        raise click.BadParameter(f"TEXT is {len(text)} characters; docq grounds answers of up to "
                                 f"{grounding.MAX_ANSWER}: give the part to find", param_hint="TEXT")
    pages = load_pages(doc, read, progress=Progress(show))
    matches = grounding.find_all(text, pages)[:limit]
    result = grounding.ground_result(doc, text, matches)
    if kind:
        from docvqa_cli import typed

        result = {"doc": result["doc"], "text": result["text"], "type": kind, "matches": result["matches"]}
        for m, out in zip(matches, result["matches"]):
            t = typed.read_typed(kind, text, m, pages, date_order)
            out.update(value=t.value, currency=t.currency, value_note=t.note)
    click.echo(json.dumps(result, ensure_ascii=False))
    if not matches:
        click.echo(f"docq: {text!r} not found in {doc}", err=True)
        return ExitCode.partial
    return ExitCode.ok
