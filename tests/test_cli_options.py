"""The CLI's option groups: declared once, built into frozen option objects, and cheap to
build (no heavy import for --help, --version or shell completion)."""

from __future__ import annotations

import dataclasses
import subprocess

import click
import pytest
from click.testing import CliRunner

from docvqa_cli import options
from docvqa_cli.cli import main
from docvqa_cli.cli.common import answer_options, model_options, output_options, read_options
from docvqa_cli.errors import EnvironmentProblem, ExitCode, UsageError

HEAVY = ("pymupdf", "fitz", "torch", "transformers", "numpy", "PIL", "rapidocr")

# Runs the CLI the way the console script does, then says which heavy modules it imported.
PROBE = """
import atexit, os, sys
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))
from docvqa_cli.cli import main
main(prog_name="docq")
"""


def _probe(python, env, *args, **extra_env):
    return subprocess.run([python, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                          env={**env, **extra_env}, timeout=120)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["ask", "--help"], ["batch", "--help"]])
def test_help_and_version_import_nothing_heavy(python, docq_env, args):
    r = _probe(python, docq_env, *args)
    assert r.returncode == ExitCode.ok, r.stderr
    assert "HEAVY=\n" in r.stderr, r.stderr


def test_shell_completion_imports_nothing_heavy(python, docq_env):
    r = _probe(python, docq_env, _DOCQ_COMPLETE="bash_complete", COMP_WORDS="docq as", COMP_CWORD="1")
    assert r.returncode == ExitCode.ok, r.stderr
    assert "plain,ask" in r.stdout.splitlines()
    assert "HEAVY=\n" in r.stderr, r.stderr
    opts = _probe(python, docq_env, _DOCQ_COMPLETE="bash_complete", COMP_WORDS="docq ask --dev", COMP_CWORD="2")
    assert "plain,--device" in opts.stdout.splitlines() and "HEAVY=\n" in opts.stderr


@click.command()
@read_options()
@model_options()
@answer_options()
@output_options()
def probe(read, model, answer, out):
    """Returns the option objects the groups build."""
    return read, model, answer, out


def _objects(*args):
    r = CliRunner().invoke(probe, list(args), standalone_mode=False)
    assert r.exception is None, r.output
    return r.return_value


def test_no_flags_give_the_option_objects_defaults():
    assert _objects() == (options.ReadOptions(), options.ModelOptions(), options.AnswerOptions(),
                          options.OutputOptions())
    assert options.AnswerOptions().keep == options.DEFAULT_KEEP == options.TuneOptions().keep


def test_flags_fill_the_option_objects():
    read, model, answer, out = _objects("-m", "some/model", "--device", "CUDA:01", "--quant", "none", "--keep", "0.25",
                                        "--pages", "1-2", "--ocr", "tesseract", "--ocr-lang", "deu", "--no-visual",
                                        "--format", "csv", "-o", "x.csv", "--bom")
    assert model == options.ModelOptions(model="some/model", device="cuda:1", quant="none")
    assert answer == options.AnswerOptions(keep=0.25, visual=False)
    assert read == options.ReadOptions(pages="1-2", ocr="tesseract", ocr_lang="deu")
    assert out == options.OutputOptions(format="csv", output="x.csv", bom=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.device = "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cpu:1", "mps"])
def test_a_bad_device_is_refused_naming_the_choices(bad):
    r = CliRunner().invoke(probe, ["--device", bad])
    assert r.exit_code == ExitCode.usage
    assert "cuda:N" in r.output and "--device" in r.output


def test_commands_share_the_declarations():
    """--model/-m, --device and --keep mean the same in every command that has them."""
    for name in ("ask", "batch", "explain", "tune"):
        params = {p.name: p for p in main.commands[name].params}
        assert params["model"].opts == ["-m", "--model"], name
        assert params["device"].default == options.ModelOptions.device, name
        assert params["keep"].default == options.DEFAULT_KEEP, name
        assert params["dpi"].default == options.DEFAULT_DPI, name


def test_a_group_refuses_a_second_default():
    with pytest.raises(TypeError, match="written once"):
        answer_options("keep", keep={"default": 0.7})
    with pytest.raises(TypeError, match="no option"):
        model_options("nonesuch")


def test_a_group_builds_its_object_once_per_command():
    """Two OutputOptions groups on one command would build two objects, the inner one winning."""
    with pytest.raises(TypeError, match="one OutputOptions group per command"):
        output_options("output")(output_options("csv_raw")(lambda out: out))


def test_resolve_device_takes_cuda_n():
    from docvqa_cli.vlm import load

    assert load.resolve_decode("auto", "cuda:1") == "static"
    assert load.resolve_decode("auto", "cpu") == "plain"
    with pytest.raises(UsageError, match="cuda:N"):
        load.resolve_device("cuda:one")
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert load.resolve_device(f"cuda:{count - 1}") == f"cuda:{count - 1}"
        with pytest.raises(EnvironmentProblem, match=f"cuda:{count - 1}"):
            load.resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(EnvironmentProblem, match="no CUDA GPU"):
            load.resolve_device("cuda:1")


def test_an_unknown_ocr_engine_is_refused_before_the_document_is_read(tmp_path):
    r = CliRunner().invoke(main, ["ground", str(tmp_path / "absent.pdf"), "x", "--ocr", "nonesuch"])
    assert r.exit_code == ExitCode.usage
    assert "--ocr: unknown engine 'nonesuch'; choose one of rapidocr, tesseract" in r.output
    assert "absent.pdf" not in r.output


def test_completing_the_ocr_engine_lists_the_engines(python, docq_env):
    r = _probe(python, docq_env, _DOCQ_COMPLETE="bash_complete", COMP_WORDS="docq ask --ocr ", COMP_CWORD="3")
    assert r.stdout.splitlines() == ["plain,rapidocr", "plain,tesseract"], r.stdout + r.stderr
