"""`docq ask` end to end with a tiny random model, the loading policy, and the prompts.

The tiny model's answers are noise: the records are checked for their form only.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _tiny_models import build_idefics3
from docvqa_cli import prompts
from docvqa_cli.errors import EnvironmentProblem, ExitCode, UsageError
from docvqa_cli.records import KEYS
from docvqa_cli.vlm import load


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_idefics3(tmp_path_factory.mktemp("tiny") / "idefics3")


def docq(env, *args, stdin=None):
    """A real `python -m docvqa_cli` process (used for the main end-to-end run)."""
    return subprocess.run([sys.executable, "-m", "docvqa_cli", *map(str, args)], env=env, input=stdin,
                          capture_output=True, timeout=300)


def docq_in_process(monkeypatch, *args, stdin=None, env=None):
    """The same command in this process (Click's runner): stdout and stderr kept apart."""
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    monkeypatch.setenv("NO_COLOR", "1")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    return result.exit_code, result.stdout_bytes, result.stderr_bytes


def test_ask_writes_one_well_formed_record_per_question(tiny_model, invoice_pdf, docq_env):
    run = docq(docq_env, "ask", invoice_pdf, "What is the total due?", "What is the invoice number?",
               "--model", tiny_model, "--device", "cpu", "--max-new-tokens", "5")
    assert run.returncode == ExitCode.ok, run.stderr.decode()
    lines = run.stdout.decode().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for n, rec in enumerate(records, 1):
        assert tuple(rec) == KEYS
        assert rec["doc"] == str(invoice_pdf)
        assert rec["question_id"] == f"q{n}"
        assert isinstance(rec["answer"], str)
        assert rec["confidence"] is None or 0 < rec["confidence"] <= 1
        assert rec["tiles_total"] > 1 and rec["tiles_kept"] == -(-rec["tiles_total"] // 2)
        assert rec["model"] == str(tiny_model)
        assert rec["error"] is None and rec["seconds"] > 0
        for box in rec["boxes"]:
            assert set(box) == {"page", "x0", "y0", "x1", "y1"} and box["x0"] <= box["x1"]
    assert records[0]["question"] == "What is the total due?"


def test_ask_reads_stdin_and_keeps_all_tiles_at_keep_1(tiny_model, invoice_pdf, monkeypatch):
    code, out, err = docq_in_process(monkeypatch, "ask", "-", "Total?", "--model", tiny_model, "--device", "cpu",
                                     "--keep", "1", "--max-new-tokens", "2", "--prompt", "grounded",
                                     stdin=invoice_pdf.read_bytes())
    assert code == ExitCode.ok, err.decode()
    (rec,) = [json.loads(line) for line in out.decode().splitlines()]
    assert rec["doc"] == "-" and rec["tiles_kept"] == rec["tiles_total"]


@pytest.mark.parametrize("args, code, words", [
    (["--keep", "0"], ExitCode.usage, "--keep"),
    (["--prompt", "no-such-prompt"], ExitCode.usage, "no such prompt"),
])
def test_bad_options_fail_before_loading(invoice_pdf, monkeypatch, args, code, words):
    got, out, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--device", "cpu", *args)
    assert got == code
    assert out == b""
    assert words in err.decode()


def test_unknown_model_type_lists_the_families(tmp_path, invoice_pdf, monkeypatch):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    code, out, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--model", folder, "--device", "cpu")
    assert code == ExitCode.usage and out == b""
    err = err.decode()
    assert "'bert'" in err and "idefics3" in err and len(err.strip().splitlines()) == 1


def test_offline_hub_id_not_in_cache_says_how_to_fetch_it(tmp_path, invoice_pdf, monkeypatch):
    code, out, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--model", "someone/not-cached-vlm",
                                     "--device", "cpu", env={"HF_HUB_OFFLINE": "1",
                                                              "HF_HUB_CACHE": str(tmp_path / "hf")})
    assert code == ExitCode.environment
    assert "HF_HUB_OFFLINE" in err.decode() and out == b""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_a_gpu_is_an_environment_problem():
    with pytest.raises(EnvironmentProblem, match="--device cpu"):
        load.resolve_device("cuda")
    assert load.resolve_device("auto") == "cpu"


def test_quantisation_policy():
    assert load.resolve_quant("auto", "cuda") == "4bit"
    assert load.resolve_quant("auto", "cpu") == "none"
    with pytest.raises(UsageError, match="--quant 4bit needs --device cuda"):
        load.resolve_quant("4bit", "cpu")
    cfg = load.quantization_config("4bit", ("model.vision_model", "model.connector"))
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert str(cfg.bnb_4bit_compute_dtype).endswith("bfloat16")
    assert cfg.llm_int8_skip_modules == ["model.vision_model", "model.connector"]
    assert load.quantization_config("8bit").load_in_8bit
    assert load.quantization_config("none") is None


def test_missing_bitsandbytes_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(EnvironmentProblem, match="pip install bitsandbytes"):
        load.quantization_config("4bit")


def test_cpu_default_is_the_small_model_with_one_line(monkeypatch):
    said = []

    def stop(name, *a, **k):
        raise RuntimeError(f"stop at {name}")

    monkeypatch.setattr(load, "_load_config", stop)
    with pytest.raises(RuntimeError, match=load.DEFAULT_CPU_MODEL):
        load.load_backend(None, device="cpu", say=said.append)
    assert len(said) == 1 and load.DEFAULT_CPU_MODEL in said[0] and "CPU" in said[0]


def test_a_family_registers_with_one_call():
    from docvqa_cli.vlm.base import Backend

    class Toy(Backend):
        family = "toy"
        model_types = ("toy_vlm",)

    from docvqa_cli.vlm import families

    try:
        families.register(Toy)
        assert families.backend_for("toy_vlm") is Toy
        assert families.families()["idefics3"].family == "idefics3"
    finally:
        families._REGISTRY.pop("toy_vlm", None)


def test_prompts_built_in_and_from_a_file(tmp_path):
    assert {"default", "grounded"} <= set(prompts.names())
    default = prompts.load(None)
    assert "{question}" in default and "shortest exact answer" in default
    assert "box" in prompts.load("grounded")
    custom = tmp_path / "mine.txt"
    custom.write_text("Q: {question} {not a field}")
    assert prompts.render(prompts.load(str(custom)), " Total? ") == "Q: Total? {not a field}"
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder")
    with pytest.raises(UsageError, match="placeholder"):
        prompts.load(str(bad))


def test_packaged_prompts_match_the_repo_folder():
    packaged = prompts._packaged_dir()
    repo = sorted(p.name for p in prompts.REPO_DIR.iterdir())
    assert repo == sorted(p.name for p in packaged.iterdir() if p.name.endswith(".txt"))
    for name in repo:
        assert (prompts.REPO_DIR / name).read_text() == (packaged / name).read_text(), name


def test_ask_csv_to_file_with_an_annotated_copy(tiny_model, invoice_pdf, tmp_path, monkeypatch):
    import csv

    import pymupdf

    out, pdf = tmp_path / "answers.csv", tmp_path / "annotated.pdf"
    code, stdout, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "Date?", "--model", tiny_model,
                                        "--device", "cpu", "--max-new-tokens", "3", "--format", "csv",
                                        "-o", out, "--annotate", pdf)
    assert code == ExitCode.ok, err.decode()
    assert stdout == b""  # records went to the file
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["question"] for r in rows] == ["Total?", "Date?"]
    with pymupdf.open(pdf) as doc:
        assert doc.page_count == 1 and "Total due" in doc[0].get_text()


@pytest.mark.parametrize("make, cause", [
    (lambda p: p, "no such file"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    (lambda p: (p.write_text("just some text\n"), p)[1], "not a PDF"),
])
def test_bad_document_is_one_line_naming_the_file_exit_1(tiny_model, tmp_path, monkeypatch, make, cause):
    bad = make(tmp_path / "bad.pdf")  # the model is checked first (it is there), then the document fails
    code, out, err = docq_in_process(monkeypatch, "ask", bad, "Total?", "--device", "cpu", "--model", tiny_model)
    assert code == ExitCode.partial
    assert out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and cause in lines[0]
    assert "Traceback" not in err.decode()


def test_outputs_are_checked_before_any_work_and_never_overwrite_the_input(tiny_model, tmp_path, monkeypatch):
    from conftest import write_invoice_pdf

    doc = write_invoice_pdf(tmp_path / "v.pdf")
    before = doc.read_bytes()
    cases = [
        (["-o", doc], "is an input"),
        (["--annotate", doc], "is an input"),
        (["-o", tmp_path / "no-such-folder" / "x.jsonl"], "does not exist"),
        (["--annotate", tmp_path / "no-such-folder" / "x.pdf"], "does not exist"),
    ]
    for args, words in cases:
        # A model that does not exist: the check must come before any loading.
        code, out, err = docq_in_process(monkeypatch, "ask", doc, "Total?", "--model", tmp_path / "nothing",
                                         "--device", "cpu", *args)
        assert code == ExitCode.usage, err.decode()
        assert words in err.decode() and err.decode().count("\n") == 1
        assert doc.read_bytes() == before


def test_an_existing_output_is_kept_unless_overwrite_is_given(tiny_model, invoice_pdf, tmp_path, monkeypatch):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"doc": "earlier.pdf", "question_id": "q1"}\n')
    before = out.read_bytes()
    # Refused before any work (a model that does not exist is never reached), file untouched.
    code, stdout, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--model", tmp_path / "nothing",
                                        "--device", "cpu", "-o", out)
    assert code == ExitCode.usage and stdout == b""
    assert "already exists" in err.decode() and "--overwrite" in err.decode() and err.decode().count("\n") == 1
    assert out.read_bytes() == before
    code, _, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "--overwrite", "Total?", "--model", tiny_model,
                                   "--device", "cpu", "--max-new-tokens", "2")
    assert code == ExitCode.usage and "--overwrite needs -o" in err.decode()
    # An empty file (or /dev/null) is written to; --overwrite replaces one that holds records.
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    for path, extra in ((empty, []), (out, ["--overwrite"])):
        code, _, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--model", tiny_model,
                                       "--device", "cpu", "--max-new-tokens", "2", "-o", path, *extra)
        assert code == ExitCode.ok, err.decode()
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [(r["doc"], r["question"]) for r in rows] == [(str(invoice_pdf), "Total?")]


def test_csv_chosen_by_the_output_name_and_empty_question_refused(tiny_model, invoice_pdf, tmp_path, monkeypatch):
    out = tmp_path / "answers.csv"
    code, _, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "Total?", "--model", tiny_model,
                                   "--device", "cpu", "--max-new-tokens", "2", "-o", out)
    assert code == ExitCode.ok, err.decode()
    assert out.read_text(encoding="utf-8").startswith("doc,question_id,question,answer,")
    code, _, err = docq_in_process(monkeypatch, "ask", invoice_pdf, "  ", "--device", "cpu")
    assert code == ExitCode.usage and "empty question" in err.decode()
