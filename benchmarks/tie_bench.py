"""TIE training cost on one GPU: step time, tokens per second and peak memory of `docq tune`.

Builds a random-weight backbone of a real architecture from a config (nothing downloaded),
saves it like a hub model, loads it through docq's own `load_backend` (4-bit NF4 base on
CUDA, adapters in bf16) and runs the product's `Trainer` on made-up invoices: first a short
warm-up, then the timed steps, for each adapter layer plan asked for (`--every 1 2`).

    python benchmarks/tie_bench.py --arch smolvlm-instruct --steps 20 --every 1 2 --quant 4bit

Needs CUDA, bitsandbytes (for 4bit) and pymupdf. Prints one JSON line per plan; copy the
numbers into benchmarks/RESULTS.md with the command and the card.

Architectures (text / vision sizes of the public configs; weights are random):
- smolvlm-instruct: SmolVLM-Instruct 2.2B (SigLIP so400m 27 layers x 1152, Llama 24 x 2048)
- smolvlm-256m: SmolVLM-256M-Instruct (SigLIP 12 x 768, 30 x 576)
- qwen3-vl-4b (and the other Qwen3-VL archs of gpu_bench.py): the default CUDA model; TIE
  conditions each image's run of Qwen's packed patch sequence, and the relevance loss maps
  the overview's patches to tiles (vlm/families/qwen.py, ``patch_order``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

# One source of architectures for the GPU benchmarks: gpu_bench.py's configs and builder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import ARCHS as _ALL, build  # noqa: E402

# TIE (adapters, relevance loss, visual scorer) is mapped for Idefics3 (SmolVLM) and Qwen-VL.
ARCHS = list(_ALL) + ["tiny-idefics3"]


def invoices(folder: Path, n: int) -> Path:
    from conftest import INVOICE_LINES, write_invoice_pdf

    recs = []
    for i in range(n):
        number, total = f"INV-{20417 + 97 * i}", f"{100 + 37 * i}.{i % 100:02d}"
        lines = [l for l in INVOICE_LINES if not l[1].startswith(("Invoice No", "Total due"))]
        lines += [((400, 100), f"Invoice No: {number}", 10), ((300, 700), f"Total due: EUR {total}", 12)]
        pdf = write_invoice_pdf(folder / f"inv{i}.pdf", lines)
        recs.append({"doc": str(pdf), "question": "What is the invoice number?", "answer": number})
        recs.append({"doc": str(pdf), "question": "What is the total due?", "answer": total})
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCHS), default="smolvlm-instruct")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quant", choices=["4bit", "8bit", "none"], default="4bit")
    ap.add_argument("--dpi", type=int, default=100)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = ap.parse_args()

    import torch

    from docvqa_cli.tune import Trainer, TuneOptions, read_examples
    from docvqa_cli.vlm.load import load_backend
    from docvqa_cli.vlm.tie import Tie

    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    folder = build(tmp / "model", args.arch, args.device)
    cuda = args.device == "cuda"
    build_s = time.perf_counter() - t0
    examples = read_examples(invoices(tmp, 8))
    backend = load_backend(str(folder), device=args.device, quant=args.quant if cuda else "none")
    for every in args.every:
        tie = Tie.create(backend.model, args.arch, tokenizer=backend._tokenizer(), every=every)
        opts = TuneOptions(steps=args.warmup, lr=1e-4, every=every, heldout=0.0, checkpoint_every=0,
                           dpi=args.dpi, ocr=None, keep=args.keep)
        trainer = Trainer(backend, tie, opts, say=lambda s: None)
        trainer.train(examples, tmp / f"warm{every}", progress=False)
        # tokens per step: the prompt (text + image tokens) plus the answer
        toks = []
        for ex in examples:
            prep = trainer.prepare(ex)
            inputs = backend.preprocess(ex.question, prep.views, trainer.template)
            toks.append(int(inputs.get("model_inputs", inputs)["input_ids"].shape[1]))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        trainer.opt = dataclasses.replace(trainer.opt, steps=args.warmup + args.steps, resume=False)
        m = trainer.train(examples, tmp / f"run{every}", progress=False)
        if cuda:
            torch.cuda.synchronize()
        step_s = m["seconds"] / max(1, m["steps"])
        print(json.dumps({
            "arch": args.arch, "quant": args.quant if cuda else "none", "every": every, "adapter_layers": len(tie.config.layers),
            "adapter_params": m["adapter_parameters"], "steps": m["steps"], "step_s": round(step_s, 4),
            "tokens_per_step": round(sum(toks) / len(toks), 1),
            "tokens_per_s": round(sum(toks) / len(toks) / step_s, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "first_loss": m["first_loss"], "last_loss": m["last_loss"], "build_s": round(build_s, 1),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        }), flush=True)
        tie.detach()


if __name__ == "__main__":
    main()
