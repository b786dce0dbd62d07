"""``docq models pull`` and ``docq models list``: the models on this machine."""

from __future__ import annotations

import sys

import click

from docvqa_cli.cli.common import handle_errors
from docvqa_cli.errors import ExitCode
from docvqa_cli.options import DEFAULT_CPU_MODEL, DEFAULT_MODEL

TARGETS = {"cpu": (DEFAULT_CPU_MODEL,), "cuda": (DEFAULT_MODEL,), "all": (DEFAULT_MODEL, DEFAULT_CPU_MODEL)}


@click.group()
def models():
    """Fetch models ahead of time and list those on this machine (the Hugging Face cache)."""


@models.command()
@click.argument("names", nargs=-1, metavar="[MODEL]...")
@click.option("--for", "target", type=click.Choice(["auto", *TARGETS]), default="auto", show_default=True,
              help="Without MODEL: the default model of this machine (auto), of a CPU-only or a CUDA machine, "
                   "or both (all).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary on stderr.")
@handle_errors
def pull(names, target, quiet):
    """Download MODEL(s) (hub ids) into the Hugging Face cache: safetensors weights,
    configs and tokenizer only. Run it again to resume a download that was cut off.

    Prints each model's folder on stdout. For a machine without the network, copy the
    cache folder (docq models list shows it) and set HF_HUB_OFFLINE=1 there."""
    from docvqa_cli import models as models_mod

    if not names:
        if target == "auto":
            from docvqa_cli.vlm.load import resolve_device

            names = (models_mod.default_model(resolve_device("auto")),)
        else:
            names = TARGETS[target]
    elif target != "auto":
        raise click.UsageError("--for picks default models; leave it out when you name the MODEL")
    progress = not quiet and sys.stderr.isatty()
    for name in names:
        if not quiet:
            click.echo(f"docq: pulling {name} into {models_mod.cache_dir()}", err=True)
        path = models_mod.pull(name, progress=progress)
        click.echo(path)
        if not quiet:
            from pathlib import Path

            size = models_mod.human(models_mod.folder_size(Path(path)))
            click.echo(f"docq: {name}: ready ({size})", err=True)
    return ExitCode.ok


@models.command(name="list")
@handle_errors
def list_():
    """The models in the Hugging Face cache: size, whether complete, which device uses it by
    default; the default models that are missing are listed too."""
    from docvqa_cli import models as models_mod

    found = models_mod.cached()
    names = {c.name for c in found}
    rows = [(c.name, models_mod.human(c.size), c.default_for or "-", "ready" if c.complete else
             f"incomplete: docq models pull {c.name}") for c in found]
    for name, device in ((DEFAULT_MODEL, "cuda"), (DEFAULT_CPU_MODEL, "cpu")):
        if name not in names:
            rows.append((name, "-", device, f"not cached: docq models pull {name}"))
    header = ("MODEL", "SIZE", "DEFAULT FOR", "STATE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    click.echo(f"docq: cache {models_mod.cache_dir()}", err=True)
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return ExitCode.ok
