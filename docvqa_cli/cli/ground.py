"""``docq ground``: where a text is printed in a document (no model)."""

from __future__ import annotations

import click

from docvqa_cli.cli.common import handle_errors, load_pages, read_options
from docvqa_cli.errors import ExitCode


@click.command()
@click.argument("doc")
@click.argument("text")
@read_options()
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Print at most this many matches (default: all).")
@handle_errors
def ground(doc, text, read, limit):
    """Where TEXT is printed in DOC: pages and boxes as JSON, best first (no model).

    Exit code 1, with the object and an empty "matches", when TEXT is not found.
    """
    import json

    from docvqa_cli import grounding

    if not text.strip():
        raise click.BadParameter("TEXT is empty", param_hint="TEXT")
    pages = load_pages(doc, read)
    matches = grounding.find_all(text, pages)[:limit]
    click.echo(json.dumps(grounding.ground_result(doc, text, matches), ensure_ascii=False))
    if not matches:
        click.echo(f"docq: {text!r} not found in {doc}", err=True)
        return ExitCode.partial
    return ExitCode.ok
