"""The ``docq`` command: one module per command, each thin. Parse, check, call, write, return
a code.

All logic lives in the step modules; every ``DocqError`` becomes one line on stderr and its
exit code in ``common.handle_errors``. Only records go to stdout. The option groups and
their defaults are declared once in ``common`` and ``docvqa_cli.options``. Building the
commands imports nothing heavy, so ``docq --help``, ``--version`` and shell completion are
fast; each command imports what it needs when it runs.
"""

from __future__ import annotations

import click

from docvqa_cli import __version__
from docvqa_cli.cli import ask, batch, doctor, explain, export, ground, models, tune
from docvqa_cli.cli.common import console, handle_errors  # noqa: F401 (the commands' shared helpers)
from docvqa_cli.vlm.threads import quiet_waiting


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="docq")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """docq: answer questions about PDFs and scans, with the box that proves each answer.

    Shell completion: eval "$(_DOCQ_COMPLETE=bash_source docq)" in ~/.bashrc
    (zsh_source for zsh, fish_source for fish); see the README.
    """
    quiet_waiting()  # before any command imports torch


for _command in (doctor.doctor, models.models, ask.ask, ground.ground, tune.tune, explain.explain, batch.batch,
                 export.export):
    main.add_command(_command)
