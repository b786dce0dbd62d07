"""docq batch --engine ray: the same job on Ray Data gives the same records as the local engine.

One local Ray session (2 CPUs) serves the whole module: Ray's start-up is slow on a small
machine, so the tests share it and keep the number of Ray runs small. The model is the
tiny random-weight Idefics3 (tests/_tiny_models.py), loaded through docq's own loader
in each Ray actor; decoding is greedy, so both engines must produce the same answers.
Skipped when Ray is not installed (``pip install 'docq[ray]'``).
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INVOICE_LINES, write_invoice_pdf
from docvqa_cli import batch, formats, pipeline
from docvqa_cli.batch import ray as ray_engine
from docvqa_cli.options import AnswerOptions, ModelOptions
from docvqa_cli.reading import documents

QUESTIONS = [batch.Question("q1", "What is the total amount?"), batch.Question("q2", "What is the invoice number?"),
             batch.Question("q3", "What is the date of the invoice?")]
COMPARED = ("doc", "question_id", "question", "answer", "confidence", "page", "boxes", "tiles_kept",
            "tiles_total", "model", "error")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=ray_engine.runtime_env())
    # The worker-killing stand-ins below live in this test module, which the workers cannot
    # import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from _tiny_models import build_idefics3

    root = tmp_path_factory.mktemp("ray-job")
    model = build_idefics3(root / "tiny-idefics3")
    docs = []
    for i in range(3):
        path = root / f"inv{i}.pdf"
        write_invoice_pdf(path, lines=[*INVOICE_LINES, ((72, 760), f"Reference R-{1000 + i}", 10)])
        docs.append(str(path))
    bad = root / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7 this is not really a PDF")
    docs.append(str(bad))
    return {"root": root, "model": model, "docs": docs, "bad": str(bad)}


def answerer_for(model: Path):
    open_backend = functools.partial(pipeline.open_backend, ModelOptions(str(model), "cpu", "none"))
    return batch.model_answerer(open_backend, AnswerOptions(max_new_tokens=4))


LOAD = functools.partial(documents.load, ocr="rapidocr")


def run(job, out: Path, engine=None, overwrite=False, load=LOAD, answerer=None, docs=None) -> batch.Summary:
    output = batch.Output(str(out), formats.get("jsonl"), overwrite=overwrite)
    try:
        return batch.run(QUESTIONS, docs or job["docs"], load=load, answerer=answerer or answerer_for(job["model"]),
                         output=output, jobs=0, engine=engine,
                         stderr=io.StringIO())
    finally:
        output.close()


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def compared(records: list[dict]) -> list[tuple]:
    return sorted(tuple(json.dumps(r[k], sort_keys=True) for k in COMPARED) for r in records)


def test_same_records_as_the_local_engine_and_a_bad_file_gives_error_records_then_resume(ray_session, job):
    local_out, ray_out = job["root"] / "local.jsonl", job["root"] / "ray.jsonl"
    local = run(job, local_out, overwrite=True)
    summary = run(job, ray_out, engine=ray_engine.RayEngine(LOAD, answerer_for(job["model"]), device="cpu"),
                  overwrite=True)
    got, want = rows(ray_out), rows(local_out)
    assert compared(got) == compared(want)
    assert (summary.answered, summary.errors, summary.documents_done) == (local.answered, local.errors, 4)
    assert summary.answered == 9 and summary.errors == 3
    for r in got:
        if r["doc"] == job["bad"]:
            assert r["error"].startswith(job["bad"] + ": ") and r["answer"] == ""
        else:
            assert r["error"] is None and 0 < r["tiles_kept"] < r["tiles_total"]
    # Resume: keep a subset of the records (the file cut after a whole record), run again.
    keep_lines = ray_out.read_text().splitlines(keepends=True)[:5]
    ray_out.write_text("".join(keep_lines))
    again = run(job, ray_out, engine=ray_engine.RayEngine(LOAD, answerer_for(job["model"]), device="cpu"))
    after = rows(ray_out)
    assert after[:5] == [json.loads(line) for line in keep_lines]  # untouched
    pairs = [(r["doc"], r["question_id"]) for r in after]
    assert len(pairs) == len(set(pairs)) == 12
    assert (again.skipped, again.answered + again.errors) == (5, 7)
    assert compared(after) == compared(want)


# --- workers that die: stand-ins that kill their own worker process once ----------------------

def load_dying_once(path, marker):
    """documents.load, except that the first call for the first document kills the worker,
    and every call for a document named poison.pdf does."""
    if path.endswith("poison.pdf"):
        os._exit(1)
    if path.endswith("inv0.pdf") and not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)
    return LOAD(path)


def answerer_dying_once(model, marker):
    make = answerer_for(model)

    def dying_make():
        step = make()

        class Dying:  # the real answer step, except that it kills its worker once
            batch_size, model_name, answer_many = step.batch_size, step.model_name, step.answer_many

            def answer(self, pages, questions, keep):
                if pages[0].doc.endswith("inv1.pdf") and not os.path.exists(marker):
                    Path(marker).write_text("died")
                    os._exit(1)
                return step.answer(pages, questions, keep)

        return Dying()

    return dying_make


def test_a_worker_that_dies_loses_no_records_and_a_poisonous_file_is_error_records(ray_session, job, tmp_path):
    load_marker, answer_marker = tmp_path / "load-died", tmp_path / "answer-died"
    load = functools.partial(load_dying_once, marker=str(load_marker))
    answerer = answerer_dying_once(job["model"], str(answer_marker))
    poison = str(write_invoice_pdf(tmp_path / "poison.pdf"))
    docs = [*job["docs"], poison]
    out = tmp_path / "out.jsonl"
    summary = run(job, out, engine=ray_engine.RayEngine(load, answerer, device="cpu"), load=load,
                  answerer=answerer, docs=docs)
    assert load_marker.exists() and answer_marker.exists()  # both workers did die once
    got = rows(out)
    assert sorted((r["doc"], r["question_id"]) for r in got) == sorted((d, q.id) for d in docs for q in QUESTIONS)
    assert sorted(r["doc"] for r in got if r["error"]) == sorted([job["bad"]] * 3 + [poison] * 3)
    assert all("died on it at every try" in r["error"] for r in got if r["doc"] == poison)
    assert summary.answered == 9


def answerer_killed_by(model, name, victim, marker):
    make = answerer_for(model)

    def killing_make():
        step = make()

        class Killed:  # the real answer step, except that the document named ``name`` kills its
            # worker at every try, and ``victim`` is lost once with an answering actor of the
            # first pass (as a document queued on an actor that a neighbour kills is; it may
            # also be lost beside the killer without being called: either way, in the first pass)
            batch_size, model_name, answer_many = step.batch_size, step.model_name, step.answer_many

            def answer(self, pages, questions, keep):
                import ray

                if pages[0].doc.endswith(name):
                    os._exit(1)
                in_actor = ray.get_runtime_context().get_actor_id() is not None
                if pages[0].doc.endswith(victim) and in_actor and not os.path.exists(marker):
                    Path(marker).write_text("died")
                    os._exit(1)
                return step.answer(pages, questions, keep)

        return Killed()

    return killing_make


def test_a_document_that_kills_the_answering_actor_costs_only_its_own_records(ray_session, job, tmp_path,
                                                                              monkeypatch):
    # No task retries: a document lost with its actor (here inv1, in the first pass; the
    # killer, always) fails in the first pass at once, and only the retry pass (each document
    # in a worker of its own) can give inv1 its answers. Without it, inv1 gets error records.
    monkeypatch.setattr(ray_engine, "ANSWER_RETRIES", 0)
    killer = str(write_invoice_pdf(tmp_path / "killer.pdf"))
    good = job["docs"][:3]
    docs = [good[0], killer, *good[1:]]
    out = tmp_path / "out.jsonl"
    marker = tmp_path / "victim-died"
    answerer = answerer_killed_by(job["model"], "killer.pdf", "inv1.pdf", str(marker))
    said: list[str] = []
    engine = ray_engine.RayEngine(LOAD, answerer, device="cpu", say=said.append)
    summary = run(job, out, engine=engine, answerer=answerer, docs=docs)
    got = rows(out)
    assert sorted((r["doc"], r["question_id"]) for r in got) == sorted((d, q.id) for d in docs for q in QUESTIONS)
    assert sorted(r["doc"] for r in got if r["error"]) == [killer] * 3
    assert all("died on it at every try" in r["error"] for r in got if r["error"])
    assert summary.answered == 9
    assert any("tried again, each in a worker of its own" in line for line in said), said
    # Resume after it: nothing is answered twice, one record per pair stays.
    again = run(job, out, engine=engine, answerer=answerer, docs=docs)
    assert (again.skipped, again.answered, again.errors) == (12, 0, 0) and rows(out) == got


def test_cli_joins_a_running_ray_stdout_carries_only_records_and_a_bad_model_exits_3(ray_session, job, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "docvqa_cli", "batch", str(qfile), *job["docs"][:2], "--engine", "ray",
         "--address", ray_session, "--model", str(job["model"]), "--device", "cpu", "--max-new-tokens", "2"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(json.loads(line)["doc"] for line in lines) == sorted(job["docs"][:2])
    assert "1 answering actor on CPU" in proc.stderr and "2 answered" in proc.stderr
    # A model that cannot load in the actor (offline, not in the cache): docq's own one-line
    # message and exit code 3.
    proc = subprocess.run(
        [sys.executable, "-m", "docvqa_cli", "batch", str(qfile), job["docs"][0], "--engine", "ray",
         "--address", ray_session, "--model", "nobody/absent-model", "--device", "cpu"],
        capture_output=True, text=True, env=dict(env, HF_HUB_OFFLINE="1"), timeout=300)
    assert proc.returncode == 3 and proc.stdout == ""
    assert "docq: error: --model nobody/absent-model: " in proc.stderr and "Traceback" not in proc.stderr


# --- without a Ray run (these run whether Ray is installed or not) ------------------------------

def invoke_batch(tmp_path, *args):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("What is the total amount?\n")
    doc = write_invoice_pdf(tmp_path / "inv.pdf")
    return CliRunner().invoke(main, ["batch", str(qfile), str(doc), "-o", str(tmp_path / "out.jsonl"), *args])


def test_address_needs_the_ray_engine(tmp_path):
    result = invoke_batch(tmp_path, "--address", "auto")
    assert result.exit_code == 2 and "--address needs --engine ray" in result.output


def test_without_ray_the_ray_engine_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: import fails
    result = invoke_batch(tmp_path, "--engine", "ray")
    assert result.exit_code == 3 and "pip install 'docq[ray]'" in result.output
    assert not (tmp_path / "out.jsonl").exists()  # nothing opened before the check


def test_one_actor_per_gpu_or_one_cpu_actor():
    assert ray_engine.plan_actors(8.0, "auto", None) == (8, 1)
    assert ray_engine.plan_actors(8.0, "cpu", None) == (1, 0)
    assert ray_engine.plan_actors(0.0, None, None) == (1, 0)
    assert ray_engine.plan_actors(4.0, "cuda", 2) == (2, 1)


def test_undelivered_documents_are_tried_again_alone_once_when_more_than_the_killer_is_left():
    assert ray_engine.retry_alone(3, alone=False)  # the killer and the documents queued with it
    assert not ray_engine.retry_alone(1, alone=False)  # the killer alone: it had its retries
    assert not ray_engine.retry_alone(0, alone=False)
    assert not ray_engine.retry_alone(3, alone=True)  # tried one at a time already: error records
