"""docq batch throughput: documents per second with --jobs 0/1/2, and renders per document;
with ``--engine ray`` also on a local Ray (``ray_engine.RayEngine``) beside the local engine.

200 one-page invoices x 3 questions, answered by a tiny random-weight Idefics3 on the CPU
(built from a config with tests/_tiny_models.py, loaded through docq's own loader), through
``batch.run`` in one process so the model loads once and the PDF renders can be counted
(every ``pymupdf.Page.get_pixmap`` call, per document). The answers are noise; this
measures the batch machinery: loading ahead of the model, one render per document.

The Ray rows start a local Ray first (timed apart: "Ray start-up"); the run's seconds then
include the actor's start and its model load (the local rows load the model before the
clock starts: compare "docs/s after the first record" for the steady state). Renders are
counted in this process only, so not for Ray's worker processes.

    python benchmarks/batch.py [--docs 200] [--jobs 1 2] [--executor thread|process] [--scans]
                               [--engine local ray]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pymupdf  # noqa: E402

from docvqa_cli import batch, formats, pipeline, prompts  # noqa: E402
from docvqa_cli.options import AnswerOptions, ModelOptions  # noqa: E402
from docvqa_cli.reading import documents  # noqa: E402


class TimedOutput(batch.Output):
    """batch.Output that notes when the first and the last record were written."""

    first = last = None

    def write(self, text: str) -> None:
        super().write(text)
        self.last = time.perf_counter()
        self.first = self.first or self.last

RENDERS: Counter = Counter()
_lock = threading.Lock()
_current = threading.local()  # the document a loading thread is working on
_get_pixmap = pymupdf.Page.get_pixmap


def counting_get_pixmap(self, *args, **kwargs):
    with _lock:
        RENDERS[getattr(_current, "doc", None)] += 1
    return _get_pixmap(self, *args, **kwargs)


def counting_load(path, **kwargs):
    _current.doc = path
    try:
        return documents.load(path, **kwargs)
    finally:
        _current.doc = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--executor", choices=["thread", "process"], default="thread")
    ap.add_argument("--scans", action="store_true", help="PNG scans (OCR by RapidOCR) instead of PDFs")
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--engine", nargs="+", choices=["local", "ray"], default=["local"],
                    help="local: one row per --jobs value; ray: one row on a local Ray (all its CPUs)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="intra-op threads of the tiny model (1 is fastest for it on a shared 2-core machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)

    from _tiny_models import build_idefics3
    from conftest import write_invoice_pdf, write_scan
    from docvqa_cli.vlm.load import load_backend

    pymupdf.Page.get_pixmap = counting_get_pixmap
    tmp = Path(tempfile.mkdtemp(prefix="docq-bench-"))
    model_dir = build_idefics3(tmp / "tiny")
    backend = load_backend(str(model_dir), device="cpu", quant="none", say=lambda s: None)
    template = prompts.load(None)
    docs = []
    for i in range(args.docs):
        path = tmp / "docs" / (f"scan{i:04d}.png" if args.scans else f"inv{i:04d}.pdf")
        path.parent.mkdir(exist_ok=True)
        (write_scan(path) if args.scans else write_invoice_pdf(path))
        docs.append(str(path))
    questions = [batch.Question("q1", "What is the total amount?"), batch.Question("q2", "What is the invoice number?"),
                 batch.Question("q3", "What is the date of the invoice?")]

    step = pipeline.Answerer.build(backend, AnswerOptions(max_new_tokens=args.max_new_tokens, batch_size=1),
                                   template=template)

    load = functools.partial(counting_load if args.executor == "thread" else documents.load, ocr="rapidocr")
    print(f"# {args.docs} documents x {len(questions)} questions, tiny Idefics3 on CPU "
          f"({os.cpu_count()} cores, torch threads {args.torch_threads}), executor={args.executor}, {'scans' if args.scans else 'PDFs'}")
    print("| engine | --jobs | seconds | docs/s | docs/s after the first record | questions/s | renders per document | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def row(engine_name, jobs, engine=None):
        RENDERS.clear()
        out = TimedOutput(str(tmp / f"out-{engine_name}-{jobs}.jsonl"), formats.get("jsonl"), overwrite=True)
        t = time.perf_counter()
        s = batch.run(questions, docs, load=load, answerer=lambda: step, output=out, engine=engine,
                      jobs=jobs, executor=args.executor, stderr=io.StringIO())
        dt = time.perf_counter() - t
        out.close()
        steady = (args.docs - 1) / (out.last - out.first) if out.last and out.last > out.first else float("nan")
        per_doc = Counter(RENDERS[d] for d in docs) if args.executor == "thread" and engine is None else None
        renders = ", ".join(f"{k}: {v} docs" for k, v in sorted(per_doc.items())) if per_doc is not None else "n/a (other processes)"
        print(f"| {engine_name} | {jobs} | {dt:.1f} | {args.docs / dt:.2f} | {steady:.2f} | {s.answered / dt:.2f} "
              f"| {renders} | {s.errors} |", flush=True)

    if "local" in args.engine:
        for jobs in args.jobs:
            row("local", jobs)
    if "ray" in args.engine:
        import ray

        from docvqa_cli.batch import ray as ray_engine

        t = time.perf_counter()
        ray_engine.connect(None)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        print(f"# Ray start-up (ray.init, local, {cpus} CPUs): {time.perf_counter() - t:.1f} s", flush=True)
        answerer = batch.model_answerer(
            functools.partial(pipeline.open_backend, ModelOptions(str(model_dir), "cpu", "none")),
            AnswerOptions(max_new_tokens=args.max_new_tokens))
        ray_load = functools.partial(documents.load, ocr="rapidocr")
        try:
            row("ray", f"({cpus} CPUs)", ray_engine.RayEngine(ray_load, answerer, device="cpu"))
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
