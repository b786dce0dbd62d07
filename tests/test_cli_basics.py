"""The docq command itself, run as a user runs it (a subprocess): --version, --help, doctor."""

from __future__ import annotations

import re
import subprocess

from docvqa_cli import __version__
from docvqa_cli.errors import ExitCode


def docq(python, env, *args, timeout=120):
    return subprocess.run([python, "-m", "docvqa_cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_version(python, docq_env):
    r = docq(python, docq_env, "--version")
    assert r.returncode == ExitCode.ok
    assert r.stdout.strip() == f"docq, version {__version__}"


def test_help_lists_the_commands_and_options(python, docq_env):
    r = docq(python, docq_env, "--help")
    assert r.returncode == ExitCode.ok and r.stderr == ""
    assert "doctor" in r.stdout and "--debug" in r.stdout and "--version" in r.stdout
    bad = docq(python, docq_env, "no-such-command")
    assert bad.returncode == ExitCode.usage and "No such command" in bad.stderr and bad.stdout == ""


LINE = re.compile(r"^(OK     |missing|absent ) [^:]+: .+$|^        fix: .+$")


def test_doctor_reports_each_check(python, docq_env):
    r = docq(python, docq_env, "doctor")
    assert r.returncode == ExitCode.ok, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(LINE.match(ln) for ln in lines), lines
    for name in ("torch", "pymupdf", "OCR rapidocr", "OCR tesseract", "model cache"):
        assert any(name in ln for ln in lines), name
    assert "\x1b[" not in r.stdout  # NO_COLOR, and not a terminal
    assert "Traceback" not in r.stderr


def test_doctor_says_what_is_missing_and_how_to_fix_it(python, docq_env, tmp_path):
    # A torch that cannot be imported, and a PATH without tesseract.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = dict(docq_env, PYTHONPATH=f"{tmp_path}:{docq_env['PYTHONPATH']}", PATH=str(tmp_path))
    r = docq(python, env, "doctor")
    assert r.returncode == ExitCode.environment, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"^missing torch: not installed\n        fix: pip install torch$", out, re.M)
    assert re.search(r"^absent  OCR tesseract: not found on PATH\n        fix: apt-get install tesseract-ocr", out, re.M)
    assert "Traceback" not in r.stderr
