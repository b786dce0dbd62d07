"""The RAM check before loading a model on the CPU (``vlm/memory.py``), on the real configs.

``DOCQ_MEMORY_LIMIT`` stands for a machine with less free RAM; the real loader runs after
the check, so a folder with the real Qwen3-VL-4B metadata and no weights shows which one
answered: the check refuses first (exit 3), or the loader finds no weights (exit 2).
"""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")

from _real_models import models_dir, skip_reason  # noqa: E402
from conftest import SAMPLES  # noqa: E402

from docvqa_cli.errors import ExitCode, UsageError  # noqa: E402
from docvqa_cli.vlm import memory  # noqa: E402

real = pytest.mark.skipif(models_dir() is None, reason=skip_reason())


def test_parse_size():
    assert memory.parse_size("6GB") == 6 * 2**30
    assert memory.parse_size("512 mb") == 512 * 2**20
    assert memory.parse_size("1000") == 1000
    with pytest.raises(UsageError, match="DOCQ_MEMORY_LIMIT"):
        memory.parse_size("lots")


def test_limit_env_wins(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "3GB")
    assert memory.available_bytes() == 3 * 2**30
    monkeypatch.delenv(memory.LIMIT_ENV)
    free = memory.available_bytes()
    assert free is None or free > 0


@real
def test_estimates_from_the_real_configs():
    from transformers import AutoConfig

    qwen = AutoConfig.from_pretrained(models_dir() / "Qwen3-VL-4B-Instruct")
    smol = AutoConfig.from_pretrained(models_dir() / "SmolVLM-256M-Instruct")
    n = memory.parameter_count(qwen)
    assert 4.3e9 < n < 4.6e9  # "4B": 4.44B with the vision tower, embeddings tied
    bf16, fp32 = memory.model_bytes(qwen, torch.bfloat16, n), memory.model_bytes(qwen, torch.float32, n)
    assert 10e9 < bf16 < 12e9 and 20e9 < fp32 < 23.5e9  # measured peaks: 10.4 GB and 20.6-23.2 GB
    assert 1e9 < memory.model_bytes(smol, torch.float32) < 2.5e9


@real
def test_ask_refuses_a_model_too_big_for_the_free_ram(tmp_path, docq_env, python):
    import subprocess

    folder = tmp_path / "Qwen3-VL-4B-Instruct"  # the real metadata, no weights
    shutil.copytree(models_dir() / "Qwen3-VL-4B-Instruct", folder)

    def ask(limit, *args):
        env = dict(docq_env, **{memory.LIMIT_ENV: limit})
        return subprocess.run([python, "-m", "docvqa_cli", "ask", str(SAMPLES / "invoice.pdf"), "Total?",
                               "--model", str(folder), "--device", "cpu", *args],
                              env=env, capture_output=True, text=True, timeout=600)

    run = ask("16GB", "--dtype", "float32")  # 4.4B parameters: bf16 fits in 16 GB, float32 does not
    assert run.returncode == ExitCode.environment, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert "needs about" in line and "float32" in line and "--dtype bfloat16" in line and run.stdout == ""
    run = ask("64GB")  # fits: the loader runs and finds no weights
    assert run.returncode == ExitCode.usage and "no safetensors weights" in run.stderr, run.stderr


@real
def test_a_model_that_fits_in_no_dtype_names_a_smaller_one(monkeypatch):
    from docvqa_cli.errors import EnvironmentProblem
    from docvqa_cli.vlm.load import load_backend

    monkeypatch.setenv(memory.LIMIT_ENV, "6GB")
    with pytest.raises(EnvironmentProblem, match=r"needs about .* GB of RAM .*--model HuggingFaceTB/SmolVLM-256M") as err:
        load_backend(str(models_dir() / "Qwen3-VL-4B-Instruct"), device="cpu", quant="none", dtype="bfloat16")
    assert "--dtype" not in str(err.value) and err.value.exit_code == ExitCode.environment
