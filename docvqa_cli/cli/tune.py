"""``docq tune``: train TIE adapters on question-answer records."""

from __future__ import annotations

import sys

import click

from docvqa_cli.cli.common import answer_options, handle_errors, model_options, read_options
from docvqa_cli.errors import ExitCode
from docvqa_cli.options import TuneOptions

_T = TuneOptions  # the defaults below are the trainer's own


@click.command()
@click.argument("data", type=click.Path(dir_okay=False))
@model_options("model", "device", "quant", "dtype", "trust_remote_code",
               model={"help": "Hub id or local folder of the base model (kept frozen; default: the device's "
                              "default model)."},
               quant={"help": "The frozen base: auto is 4bit NF4 on CUDA (adapters in the model's dtype), none on "
                              "the CPU."})
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the adapters (tie_config.json, adapters.safetensors), checkpoints and metrics.")
@click.option("--steps", type=click.IntRange(1), default=_T.steps, help="Optimizer steps (default: --epochs passes).")
@click.option("--epochs", type=click.IntRange(1), default=_T.epochs, show_default=True,
              help="Passes over the training records (when --steps is not given).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=_T.lr, show_default=True,
              help="AdamW learning rate of the adapters.")
@click.option("--every", type=click.IntRange(1), default=_T.every, show_default=True,
              help="An adapter after every N-th vision encoder layer (1: all layers).")
@click.option("--relevance-weight", type=click.FloatRange(0), default=_T.relevance_weight, show_default=True,
              help="Weight of the tile-relevance loss (0: language-model loss only).")
@click.option("--heldout", type=click.FloatRange(0, 1, max_open=True), default=_T.heldout, show_default=True,
              help="Share of the records held out and reported at the end.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=_T.checkpoint_every, show_default=True,
              help="Save OUT/checkpoint every N steps (0: only at the end).")
@click.option("--resume/--no-resume", default=_T.resume, show_default=True,
              help="Go on from OUT/checkpoint if present.")
@click.option("--seed", type=int, default=_T.seed, show_default=True,
              help="Seed of the held-out split, the order of the records and the adapters' start.")
@answer_options("keep", keep={"help": "Fraction of each document's tiles the model sees while training, as in "
                                      "docq ask."})
@read_options("dpi")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar with the loss on stderr (default: only when stderr is a terminal).")
@handle_errors
def tune(data, model, out_dir, steps, epochs, lr, every, relevance_weight, heldout, checkpoint_every, resume, seed,
         answer, read, progress):
    """Train TIE adapters on DATA.jsonl records {doc, question, answer, page?}; prints a JSON report."""
    import json

    from docvqa_cli import tune as tune_mod
    from docvqa_cli.vlm.load import load_backend

    options = TuneOptions(steps=steps, epochs=epochs, lr=lr, every=every, relevance_weight=relevance_weight,
                          heldout=heldout, checkpoint_every=checkpoint_every, resume=resume, seed=seed,
                          keep=answer.keep, dpi=read.dpi)
    tune_mod.read_examples(data)  # bad data fails before the model loads
    from docvqa_cli import models

    models.require(model)
    backend = load_backend(model.model, device=model.device, quant=model.quant,
                           trust_remote_code=model.trust_remote_code, dtype=model.dtype)
    show = progress if progress is not None else sys.stderr.isatty()
    report = tune_mod.tune(data, backend, out_dir, options, progress=show)
    click.echo(json.dumps(report))
    return ExitCode.ok
