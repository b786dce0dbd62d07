"""Seconds per question of a real-size SmolVLM-256M on the CPU, split into preprocessing,
vision encoder and language model, at keep 1.0, 0.5 and 0.25 on sample_docs/invoice.pdf.

The model is built from the real ``config.json`` in ``../shared/models`` (or
``$DOCQ_REAL_MODELS``) with random weights at the real size (256M parameters), saved with the
real metadata and loaded through docq's ``load_backend`` (so the answers are noise, the work
is the real model's). Per keep, one question as docq answers it (its kept tiles and the
page's overview, the overview not cached), with ``--tokens`` new tokens forced:

- ``prep``: ``Backend.preprocess`` (image processor and tokenizer);
- ``vision``: the SigLIP encoder and connector (``Idefics3Backend._encode``, timed inside the
  forward);
- ``lm``: the rest of the forward (prefill and decoding of the language model).

Each as wall seconds and CPU seconds of the process (all its threads): on a shared machine
the wall time grows with the other jobs, the CPU time much less.

Variants, side by side in one run, each question in a fresh child process (torch's OpenMP
runtime reads its settings once, when torch loads), the variants taking turns per keep
(``--rounds`` repeats the turns):

- ``before``: float32, torch's OpenMP threads spinning while they wait (the default before
  ``quiet_waiting``), and the image processor called as docq did before (each 512 px tile
  upscaled to 1536 px, then shrunk back: the processor's default ``size``);
- ``spinning``: today's preprocessing, threads spinning (today's code without ``quiet_waiting``);
- ``float32``: float32 as the ``docq`` command runs today (its preprocessing, its threads
  waiting asleep: ``OMP_WAIT_POLICY=PASSIVE``);
- ``auto``: the same with ``--dtype auto`` (bfloat16 on a CPU with native bf16, AMX or
  AVX512-BF16; float32 elsewhere).

Sweep mode (``--questions N``): the first N questions of an invoice question file
(``SWEEP``, the questions ``sample_docs/README.md`` lists for the invoice) answered about
``sample_docs/invoice.pdf`` in one run, as ``docq batch`` does: one ``Answerer.answer`` call
for the document (its tiles made once, the batch size docq picks on the CPU, grounding and
records included), ``--keeps`` the first keep only. CPU seconds per question, the vision
encoder's share and the images it encoded. The variants here:

- ``before``: as above, and each question's kept tiles encoded again (``reuse_tiles`` off:
  only the page's overview features are kept, the code before tile features were kept);
- ``overviews``: today's code with ``reuse_tiles`` off (the code of 03:15 UTC, 2026-12-02);
- ``float32``: today's ``docq``: a tile's features are encoded once per document.

Run: ``python benchmarks/cpu_real_size.py`` from the repository root (about 1 GB of RAM for
the float32 model; a few minutes per question on 2 busy cores). ``--variants before float32``
picks some; ``--folder DIR`` keeps the built model for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _real_models import build, models_dir, skip_reason  # noqa: E402

from docvqa_cli import prompts, relevance  # noqa: E402
from docvqa_cli.reading import documents, tiles  # noqa: E402
from docvqa_cli.vlm.base import PageView  # noqa: E402
from docvqa_cli.vlm.load import load_backend  # noqa: E402
from docvqa_cli.vlm.threads import quiet_waiting  # noqa: E402

QUESTION = "What is the total amount due?"
NAME = "SmolVLM-256M-Instruct"
VARIANTS = ("before", "spinning", "overviews", "float32", "auto")
SWEEP = (  # an invoice question file (sample_docs/README.md, invoice.pdf)
    "What is the total amount?", "What is the invoice number?", "What is the invoice date?",
    "When is the invoice due?", "Who is the seller?", "Who is the buyer?", "What is the subtotal?",
    "How much VAT is charged?",
)
UNTILED = ("before", "overviews")  # tile features not kept: each question encodes its kept tiles
SPINNING = ("before", "spinning")  # without quiet_waiting: OpenMP's default waiting


def old_preprocessing(backend):
    """The image processor as docq called it before (its default size: tiles upscaled)."""
    processor = backend.image_processor
    real_call = processor.__call__

    class Upscaling:
        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, *args, **kwargs):
            kwargs.pop("size", None)
            return real_call(*args, **kwargs)

    backend.image_processor = Upscaling()


def timed_encoder(backend, spent: list):
    real = backend._encode

    def encode(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        out = real(*args, **kwargs)
        spent.append((time.perf_counter() - start, time.process_time() - cpu))
        return out

    backend._encode = encode


def measure(backend, page, all_tiles, keep: float, tokens: int, prep_only: bool = False) -> dict:
    kept = [s.tile for s in relevance.select(relevance.score(QUESTION, all_tiles), keep)]
    view = PageView(page, tiles.overview(page, max_px=backend.tile_px), sorted(kept, key=lambda t: t.index))
    # The default prompt's text, without its "stop: newline" (a random model may write a line
    # break at once): every question decodes exactly ``tokens`` tokens.
    template = prompts.render(prompts.load("default"), "{question}")
    backend._overview_features.clear()  # the page's first question: its overview is encoded too
    vision: list = []
    timed_encoder(backend, vision)
    start, cpu = time.perf_counter(), time.process_time()
    inputs = backend._preprocess(QUESTION, [view], template)
    prep = (time.perf_counter() - start, time.process_time() - cpu)
    if prep_only:
        del backend._encode
        return {"tiles": len(kept), "images": inputs["images_encoded"], "image_tokens": inputs["image_tokens"],
                "prep": prep, "vision": (0.0, 0.0), "lm": (0.0, 0.0)}
    start, cpu = time.perf_counter(), time.process_time()
    backend.forward(inputs, tokens)
    forward = (time.perf_counter() - start, time.process_time() - cpu)
    del backend._encode
    v = (sum(w for w, _ in vision), sum(c for _, c in vision))
    return {"tiles": len(kept), "images": inputs["images_encoded"], "image_tokens": inputs["image_tokens"],
            "prep": prep, "vision": v, "lm": (forward[0] - v[0], forward[1] - v[1])}


def sweep(backend, pages, keep: float, tokens: int, questions: int) -> dict:
    """The first ``questions`` of SWEEP about ``pages``, through the pipeline as docq runs them."""
    from docvqa_cli.pipeline import Answerer

    template = prompts.render(prompts.load("default"), "{question}")  # no newline stop (see measure)
    answerer = Answerer.build(backend, prompt=template, max_new_tokens=tokens)
    vision: list = []
    images: list = []
    real = backend._encode

    def encode(pixel_values, *args, **kwargs):
        images.append(pixel_values.shape[0])
        return real(pixel_values, *args, **kwargs)

    backend._encode = encode
    timed_encoder(backend, vision)
    start, cpu = time.perf_counter(), time.process_time()
    records = list(answerer.answer(pages, [(str(i), q) for i, q in enumerate(SWEEP[:questions])], keep=keep))
    total = (time.perf_counter() - start, time.process_time() - cpu)
    del backend._encode
    v = (sum(w for w, _ in vision), sum(c for _, c in vision))
    kept = sum(r.tiles_kept for r in records)
    return {"questions": len(records), "batch_size": answerer.batch_size, "images": sum(images),
            "encoder_calls": len(images), "total": total, "vision": v, "tiles_kept": kept,
            "errors": [r.error for r in records if r.error]}


def child(variant: str, folder: str, keep: float, tokens: int, prep_only: bool, questions: int = 0) -> None:
    """One question of ``variant`` in this (fresh) process; its measurement as a JSON line."""
    if "torch" in sys.modules:
        sys.exit("torch was imported before the OpenMP settings: the variants would not differ")
    if variant in SPINNING:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        quiet_waiting()
    import torch

    backend = load_backend(folder, device="cpu", quant="none", dtype="auto" if variant == "auto" else "float32",
                           say=lambda line: None)
    backend.min_new_tokens = tokens
    if variant == "before":
        old_preprocessing(backend)
    if variant in UNTILED:
        backend.reuse_tiles = False
    if questions:
        pages = documents.load(str(ROOT / "sample_docs" / "invoice.pdf"))
        m = sweep(backend, pages, keep, tokens, questions)
        m.update(variant=variant, keep=keep, threads=torch.get_num_threads(), load=os.getloadavg()[0],
                 wait=os.environ.get("OMP_WAIT_POLICY", "-"))
        print(json.dumps(m), flush=True)
        return
    page = documents.load(str(ROOT / "sample_docs" / "invoice.pdf"))[0]
    all_tiles = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    m = measure(backend, page, all_tiles, keep, tokens, prep_only)
    m.update(variant=variant, keep=keep, threads=torch.get_num_threads(), wait=os.environ.get("OMP_WAIT_POLICY", "-"),
             dtype=str(next(backend.model.parameters()).dtype).replace("torch.", ""), load=os.getloadavg()[0])
    print(json.dumps(m), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keeps", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per question (forced)")
    ap.add_argument("--variants", nargs="+", default=["before", "float32"], choices=VARIANTS)
    ap.add_argument("--rounds", type=int, default=1, help="times each variant answers at each keep, taking turns")
    ap.add_argument("--folder", default=None, help="reuse a model folder built by an earlier run")
    ap.add_argument("--prep-only", action="store_true", help="time the preprocessing only (no forward)")
    ap.add_argument("--questions", type=int, default=0, choices=range(0, len(SWEEP) + 1), metavar=f"1..{len(SWEEP)}",
                    help="sweep mode: this many questions about the invoice in one pipeline run (first keep only)")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.folder, args.keeps[0], args.tokens, args.prep_only, args.questions)
    if models_dir() is None:
        sys.exit(skip_reason())

    folder = Path(args.folder) if args.folder else None
    if folder is None or not (folder / "model.safetensors").exists():
        folder = folder or Path(tempfile.mkdtemp()) / NAME
        start = time.perf_counter()
        build(NAME, folder, small=False)
        print(f"built {folder} (real size, random weights) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} (1, 5, 15 min); "
          f"{os.cpu_count()} CPUs", flush=True)
    if args.questions:
        return run_sweep(args, folder)
    rows = []
    for keep in args.keeps:
        for _ in range(args.rounds):
            for variant in args.variants:
                cmd = [sys.executable, __file__, "--child", variant, "--folder", str(folder), "--keeps", str(keep),
                       "--tokens", str(args.tokens)] + (["--prep-only"] if args.prep_only else [])
                out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
                m = json.loads(out.strip().splitlines()[-1])
                rows.append(m)
                cols = "  ".join(f"{k} {m[k][0]:6.1f} / {m[k][1]:6.1f}" for k in ("prep", "vision", "lm"))
                total = [m["prep"][i] + m["vision"][i] + m["lm"][i] for i in (0, 1)]
                print(f"{variant:8s} keep {keep:4.2f} ({m['dtype']}, {m['threads']} threads, OMP_WAIT_POLICY "
                      f"{m['wait']}, load {m['load']:.1f}): {m['tiles']:2d} tiles + overview, {m['image_tokens']:4d} "
                      f"image tokens | wall / CPU s: {cols}  total {total[0]:6.1f} / {total[1]:6.1f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    first = args.variants[0]
    for keep in args.keeps:
        def mean(variant, i):
            got = [m for m in rows if m["variant"] == variant and m["keep"] == keep]
            return sum(m["prep"][i] + m["vision"][i] + m["lm"][i] for m in got) / len(got)

        for variant in args.variants[1:]:
            for i, kind in ((0, "wall"), (1, "CPU")):
                print(f"keep {keep:4.2f}: {variant} takes {mean(first, i) / mean(variant, i):.2f}x less {kind} time "
                      f"than {first} (mean of {args.rounds})")


def run_sweep(args, folder: Path) -> None:
    """The variants taking turns, each sweep in a fresh child process; CPU seconds per question."""
    keep, rows = args.keeps[0], []
    for _ in range(args.rounds):
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", variant, "--folder", str(folder), "--keeps", str(keep),
                   "--tokens", str(args.tokens), "--questions", str(args.questions)]
            load = os.getloadavg()[0]
            m = json.loads(subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
                           .splitlines()[-1])
            m["load_before"] = load
            rows.append(m)
            n = m["questions"]
            print(f"{variant:9s} keep {keep:4.2f}, {n} questions (batch size {m['batch_size']}, {m['threads']} threads, "
                  f"OMP_WAIT_POLICY {m['wait']}, load {load:.1f} -> {m['load']:.1f}): {m['images']} images encoded in "
                  f"{m['encoder_calls']} calls | wall / CPU s: total {m['total'][0]:6.1f} / {m['total'][1]:6.1f}, "
                  f"vision {m['vision'][0]:6.1f} / {m['vision'][1]:6.1f}, per question "
                  f"{m['total'][0] / n:5.1f} / {m['total'][1] / n:5.1f}, tiles kept {m['tiles_kept']}, errors {len(m['errors'])} {m['errors'][:1]}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")

    def mean(variant, i):
        got = [m for m in rows if m["variant"] == variant]
        return sum(m["total"][i] / m["questions"] for m in got) / len(got)

    first = args.variants[0]
    for variant in args.variants[1:]:
        for i, kind in ((0, "wall"), (1, "CPU")):
            print(f"keep {keep:4.2f}, {args.questions} questions: {variant} takes {mean(first, i) / mean(variant, i):.2f}x "
                  f"less {kind} time per question than {first} (mean of {args.rounds})")


if __name__ == "__main__":
    main()
