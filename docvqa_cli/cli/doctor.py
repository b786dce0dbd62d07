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

    checks = doctor_mod.run_checks(tie_dir)
    out = console(stderr=False)
    for check in checks:
        mark = "OK     " if check.ok else ("missing" if check.required else "absent ")
        style = "green" if check.ok else ("red" if check.required else "yellow")
        out.print(f"[{style}]{mark}[/] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            out.print(f"        fix: {check.fix}")
    return ExitCode.ok if all(c.ok or not c.required for c in checks) else ExitCode.environment
