"""The models on this machine: `docq models pull` from a hub (a real HTTP hub on 127.0.0.1
serving local folders, so no network), `docq models list` over a cache laid out as the hub
lays it out, and the check before any document work that fails fast offline with the remedy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _fake_hub import SHA, FakeHub, cache_entry

from docvqa_cli import models
from docvqa_cli.errors import EnvironmentProblem, ExitCode, UsageError
from docvqa_cli.options import DEFAULT_CPU_MODEL, DEFAULT_MODEL, ModelOptions

REPO = "acme/tiny-vlm"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    """A tiny Idefics3 as a hub repository holds it, plus files docq must not fetch."""
    from _tiny_models import build_idefics3

    folder = build_idefics3(tmp_path_factory.mktemp("repo") / "tiny")
    (folder / "pytorch_model.bin").write_bytes(b"pickled weights docq never loads")
    (folder / "README.md").write_text("# a model card\n")
    return folder


def docq(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "docvqa_cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def hub_env(docq_env, tmp_path):
    """docq with an empty HF_HOME, online (HF_HUB_OFFLINE unset)."""
    env = {k: v for k, v in docq_env.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")
    return env


def test_pull_fetches_safetensors_and_metadata_then_ask_runs_offline(tiny_repo, hub_env, invoice_pdf):
    with FakeHub({REPO: tiny_repo}) as hub:
        env = dict(hub_env, HF_ENDPOINT=hub.url)
        r = docq(env, "models", "pull", REPO)
        assert r.returncode == ExitCode.ok, r.stderr
    snapshot = Path(r.stdout.strip())
    assert snapshot == Path(hub_env["HF_HOME"]) / "hub" / "models--acme--tiny-vlm" / "snapshots" / SHA
    got = sorted(p.name for p in snapshot.iterdir())
    assert "model.safetensors" in got and "config.json" in got and "tokenizer.json" in got
    assert "pytorch_model.bin" not in got and "README.md" not in got
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path}
    assert "pytorch_model.bin" not in fetched and "model.safetensors" in fetched
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_repo / "model.safetensors").read_bytes()
    assert f"{REPO}: ready" in r.stderr

    listed = docq(hub_env, "models", "list")
    assert listed.returncode == ExitCode.ok
    row = next(line for line in listed.stdout.splitlines() if line.startswith(REPO))
    assert row.split()[-1] == "ready" and (" MB" in row or " KB" in row)
    assert str(Path(hub_env["HF_HOME"]) / "hub") in listed.stderr

    # The documented air-gapped route: the hub is gone, HF_HUB_OFFLINE=1, the cache answers.
    ask = docq(dict(hub_env, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"), "ask", invoice_pdf, "Total?",
               "-m", REPO, "--device", "cpu", "--max-new-tokens", "2")
    assert ask.returncode == ExitCode.ok, ask.stderr
    assert json.loads(ask.stdout)["model"] == REPO


def test_a_second_pull_fetches_only_what_is_missing(tiny_repo, hub_env):
    with FakeHub({REPO: tiny_repo}) as hub:
        env = dict(hub_env, HF_ENDPOINT=hub.url)
        snapshot = Path(docq(env, "models", "pull", REPO, "-q").stdout.strip())
        weights = snapshot / "model.safetensors"
        os.unlink(os.path.realpath(weights))  # a pull cut off before this file was complete
        os.unlink(weights)
        hub.requests.clear()
        r = docq(env, "models", "pull", REPO, "-q")
        assert r.returncode == ExitCode.ok and r.stderr == ""
    fetched = [path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path]
    assert [p.rsplit("/", 1)[-1] for p in fetched] == ["model.safetensors"]
    assert weights.read_bytes() == (tiny_repo / "model.safetensors").read_bytes()


def test_pull_refuses_what_it_cannot_fetch(tmp_path, hub_env):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with FakeHub({"acme/pickled": pickled}) as hub:
        env = dict(hub_env, HF_ENDPOINT=hub.url)
        r = docq(env, "models", "pull", "acme/pickled")
        assert r.returncode == ExitCode.usage and "no safetensors weights" in r.stderr
        r = docq(env, "models", "pull", "acme/absent")
        assert r.returncode == ExitCode.usage and "no such model" in r.stderr
    r = docq(dict(hub_env, HF_ENDPOINT="http://127.0.0.1:9"), "models", "pull", REPO)
    assert r.returncode == ExitCode.environment and "cannot be reached" in r.stderr
    r = docq(dict(hub_env, HF_HUB_OFFLINE="true"), "models", "pull", REPO)
    assert r.returncode == ExitCode.environment and "needs the network" in r.stderr


def test_list_shows_size_completeness_and_the_defaults(tmp_path, hub_env):
    cache = Path(hub_env["HF_HOME"]) / "hub"
    cache_entry(cache, DEFAULT_CPU_MODEL, {"config.json": b"{}", "model.safetensors": b"w" * 2500})
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    cache_entry(cache, "acme/half", {"config.json": b"{}", "model.safetensors.index.json": index.encode(),
                                      "model-00001-of-00002.safetensors": b"w"})
    r = docq(hub_env, "models", "list")
    assert r.returncode == ExitCode.ok, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert rows[DEFAULT_CPU_MODEL].split()[1:5] == ["2.5", "KB", "cpu", "ready"]
    assert "incomplete: docq models pull acme/half" in rows["acme/half"]
    assert "cuda" in rows[DEFAULT_MODEL] and f"not cached: docq models pull {DEFAULT_MODEL}" in rows[DEFAULT_MODEL]
    assert list(rows) == [DEFAULT_CPU_MODEL, "acme/half", DEFAULT_MODEL]  # cached defaults first, missing last


@pytest.mark.parametrize("flag", ["1", "true", "YES", "on"])
def test_offline_ask_with_nothing_cached_exits_3_before_touching_the_document(hub_env, tmp_path, flag):
    r = docq(dict(hub_env, HF_HUB_OFFLINE=flag), "ask", tmp_path / "not-read.pdf", "Total?", "--device", "cpu")
    assert r.returncode == ExitCode.environment and r.stdout == ""
    err = r.stderr
    assert "not-read.pdf" not in err  # the document was never opened
    assert f"--model {DEFAULT_CPU_MODEL}: not on this machine" in err
    assert f"docq models pull {DEFAULT_CPU_MODEL}" in err and "HF_HUB_OFFLINE=1" in err and "--model DIR" in err
    assert len(err.strip().splitlines()) == 1


def test_an_unreachable_hub_fails_at_once_with_the_remedy(hub_env, tmp_path):
    for command in (["ask", tmp_path / "not-read.pdf", "Total?"], ["explain", tmp_path / "not-read.pdf", "Total?", "-m", REPO]):
        r = docq(dict(hub_env, HF_ENDPOINT="http://127.0.0.1:9"), *command, "--device", "cpu")
        assert r.returncode == ExitCode.environment, r.stderr
        assert "cannot be reached" in r.stderr and "docq models pull" in r.stderr and "not-read.pdf" not in r.stderr


def test_require_takes_complete_folders_and_cached_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        models.require(ModelOptions(model=str(folder)))
    (folder / "config.json").write_text("{}")
    assert models.require(ModelOptions(model=str(folder))) == str(folder)
    with pytest.raises(UsageError, match="no such model folder"):
        models.require(ModelOptions(model=str(tmp_path / "nothing")))
    cache_entry(tmp_path / "cache", "acme/cached", {"config.json": b"{}", "model.safetensors": b"w"})
    assert models.require(ModelOptions(model="acme/cached")) == "acme/cached"
    with pytest.raises(EnvironmentProblem, match="HF_HUB_OFFLINE is set"):
        models.require(ModelOptions(model="acme/other"))
