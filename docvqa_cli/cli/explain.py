"""``docq explain``: which tiles each page keeps for a question, and why."""

from __future__ import annotations

import click

from docvqa_cli.cli.common import (Progress, answer_options, console, handle_errors, load_pages, model_options,
                                   open_model, read_options, show_options)
from docvqa_cli.errors import ExitCode


@click.command()
@click.argument("doc")
@click.argument("question")
@answer_options("keep", "max_images", keep={"help": "Fraction of each document's tiles to keep, in (0, 1]."})
@click.option("--tile-px", type=click.IntRange(64, 4096), default=None,
              help="Tile size in rendered pixels (default 512, or the model's own with --model/--tie).")
@click.option("--max-tiles", type=click.IntRange(1, 256), default=None,
              help="Most tiles per page (default 12, or the model's own with --model/--tie).")
@model_options("model", "tie", "device",
               model={"help": "Also score with this model's visual relevance (loads it; default: no model)."},
               tie={"help": "Score with these trained TIE adapters' attention (loads --model, else the base model "
                            "the adapters name)."})
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for people, or one JSON object for machines.")
@click.option("-o", "--output", default=None,
              help="Draw the kept tiles: a .png file, or a folder for one PNG per page.")
@read_options()
@show_options()
@handle_errors
def explain(doc, question, answer, tile_px, max_tiles, model, fmt, output, read, show):
    """Show which tiles each page keeps for QUESTION, and why (no model needed).

    With --model or --tie the model is loaded and its visual relevance score joins the
    others, on the model's own tiles, as `docq ask` would use them."""
    import json

    from docvqa_cli import explain as explain_mod
    from docvqa_cli.reading import tiles

    if output:
        explain_mod.check_output(output)
    if model.model or model.tie:
        from docvqa_cli import models

        models.require(model)  # before any document work
    progress = Progress(show)
    pages = load_pages(doc, read, progress=progress)
    visual = None
    if model.model or model.tie:
        backend, visual = open_model(model, True, progress)
        tile_px, max_tiles = tile_px or backend.tile_px, max_tiles or backend.max_tiles
    result = explain_mod.explain(doc, question, pages, answer, tile_px=tile_px or tiles.DEFAULT_TILE_PX,
                                 max_tiles=max_tiles or tiles.DEFAULT_MAX_TILES, visual=visual)
    if fmt == "json":
        click.echo(json.dumps(explain_mod.to_json(result), ensure_ascii=False))
    else:
        explain_mod.print_table(result, console(stderr=False))
    if output:
        for path in explain_mod.draw(result, output):
            click.echo(f"docq: wrote {path}", err=True)
    return ExitCode.ok
