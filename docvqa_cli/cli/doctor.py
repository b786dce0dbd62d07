"""``docq doctor``: what this machine has for docq, and how to fix what is missing."""

from __future__ import annotations

import click

from docvqa_cli.cli.common import console, handle_errors
from docvqa_cli.errors import ExitCode


@click.command()
@click.option("--tie", "tie_dir", type=click.Path(file_okay=False), default=None,
              help="Also check a folder of TIE adapters (from docq tune).")
@handle_errors
def doctor(tie_dir):
    """Check what this machine has for docq, and how to fix what is missing."""
    from docvqa_cli import doctor as doctor_mod

    from rich.markup import escape

    checks = doctor_mod.run_checks(tie_dir)
    out = console(stderr=False)
    for check in checks:  # the texts are escaped: a fix such as pip install 'docq[semantic]' is printed as is
        mark = "OK     " if check.ok else ("missing" if check.required else "absent ")
        style = "green" if check.ok else ("red" if check.required else "yellow")
        out.print(f"[{style}]{mark}[/] {escape(check.name)}: {escape(check.detail)}")
        if not check.ok and check.fix:
            out.print(f"        fix: {escape(check.fix)}")
    return ExitCode.ok if all(c.ok or not c.required for c in checks) else ExitCode.environment
