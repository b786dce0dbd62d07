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
    for name in ("torch", "pymupdf", "stemmer", "OCR rapidocr", "OCR tesseract", "model cache"):
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
    assert re.search(r"^missing torch: cannot be imported \(no torch here\)\n        fix: pip install torch$", out, re.M)
    assert re.search(r"^absent  OCR tesseract: not found on PATH\n        fix: apt-get install tesseract-ocr", out, re.M)
    assert "Traceback" not in r.stderr


def test_doctor_checks_a_tie_adapter_folder(python, docq_env, tmp_path):
    import json

    bad = docq(python, docq_env, "doctor", "--tie", tmp_path)
    assert bad.returncode == ExitCode.environment
    assert re.search(r"^missing TIE adapters: .*not a TIE adapter folder", bad.stdout, re.M)
    from docvqa_cli.vlm import tie

    cfg = tie.TieConfig(base_model="HuggingFaceTB/SmolVLM-256M-Instruct", family="idefics3", model_type="idefics3",
                        layers=[0, 1], every=1, num_layers=2, width=64, text_dim=64, trained_steps=7)
    from dataclasses import asdict

    (tmp_path / tie.CONFIG_NAME).write_text(json.dumps(asdict(cfg)))
    (tmp_path / tie.WEIGHTS_NAME).write_bytes(b"")
    good = docq(python, docq_env, "doctor", "--tie", tmp_path)
    assert good.returncode == ExitCode.ok, good.stdout
    assert re.search(r"^OK +TIE adapters: .*SmolVLM-256M-Instruct.*2 of 2 encoder layers, 7 steps", good.stdout, re.M)
