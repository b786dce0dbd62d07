"""docq batch throughput: documents per second with --jobs 0/1/2, and renders per document.

200 one-page invoices x 3 questions, answered by a tiny random-weight Idefics3 on the CPU
(built from a config with tests/_tiny_models.py, loaded through docq's own loader), through
``batch.run`` in one process so the model loads once and the PDF renders can be counted
(every ``pymupdf.Page.get_pixmap`` call, per document). The answers are noise; this
measures the batch machinery: loading ahead of the model, one render per document.

    python benchmarks/batch.py [--docs 200] [--jobs 1 2] [--executor thread|process] [--scans]
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

from docvqa_cli import batch, documents, pipeline, prompts  # noqa: E402

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

    def answer(pages, qs, keep):
        return pipeline.answer_questions(pages, qs, backend, keep=keep, prompt=template,
                                         max_new_tokens=args.max_new_tokens)

    load = functools.partial(counting_load if args.executor == "thread" else documents.load, ocr="rapidocr")
    print(f"# {args.docs} documents x {len(questions)} questions, tiny Idefics3 on CPU "
          f"({os.cpu_count()} cores, torch threads {args.torch_threads}), executor={args.executor}, {'scans' if args.scans else 'PDFs'}")
    print("| --jobs | seconds | docs/s | questions/s | renders per document | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for jobs in args.jobs:
        RENDERS.clear()
        out_path = tmp / f"out-{jobs}.jsonl"
        out = batch.Output(str(out_path), "jsonl", overwrite=True)
        t = time.perf_counter()
        s = batch.run(questions, docs, load=load, answerer=lambda: answer, output=out,
                      serialiser=batch.Serialiser("jsonl"), jobs=jobs, executor=args.executor, stderr=io.StringIO())
        dt = time.perf_counter() - t
        out.close()
        per_doc = Counter(RENDERS[d] for d in docs) if args.executor == "thread" else None
        renders = ", ".join(f"{k}: {v} docs" for k, v in sorted(per_doc.items())) if per_doc is not None else "n/a (processes)"
        print(f"| {jobs} | {dt:.1f} | {args.docs / dt:.2f} | {s.answered / dt:.2f} | {renders} | {s.errors} |", flush=True)


if __name__ == "__main__":
    main()
