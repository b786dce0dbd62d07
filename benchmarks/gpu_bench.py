"""Speed of the VLM step at keep 1.0 and 0.5: latency, batched throughput, FLOPs, compute floor, memory.

A random-weight model with a real architecture, built from its config numbers (no
download), saved and loaded through docq's own loading code, on one A4 page rendered at
the default DPI, with ``--questions`` different questions (each keeps its own tiles). For
each keep ratio (``--keeps``) and decode mode (``--decodes plain,static``) it measures:
- batch 1: one question through the whole pipeline (``pipeline.answer_questions``: tile
  scoring, the model forced to ``--new-tokens`` tokens, grounding), median of ``--runs``
  after ``--warmup``; the same with 1 token (prefill + vision); ms per decoded token from
  the two (never below 0: with ``--runs 1`` timing noise can invert them);
- throughput at each of ``--batch-sizes``: all questions through ``backend.answer_batch``
  ``b`` at a time, questions per second (median of ``--runs``);
- for every row, batch 1 included: the peak GPU memory allocated and reserved (GiB);
- the model FLOPs per question (counted from the config: vision encoder and connector over
  the images, language-model prefill over the prompt, the decoded tokens), the compute floor
  (questions per second if the card ran every FLOP at its bf16 matmul rate, measured here on
  an 8192^3 matmul), and the share of that floor the best throughput reaches.
Before every timed run the overview-feature cache is emptied (so every counted FLOP is
computed), and between keeps the static cache's length is reset. Each row is printed (stderr)
and appended to ``--json FILE`` (JSON lines: setup, rows, summary) the moment it is measured,
so a run stopped by a time limit keeps what it measured; ``--time-limit S`` stops starting
new measurements after S seconds. The last line on stdout:

    gpu <arch> <quant> b1_ms=<n> ratio_0.5=<n> floor_share=<n> peak_gib=<n>

(batch-1 ms per question at keep 0.5, best keep-0.5 throughput over keep 1.0's, keep 0.5's
best share of the compute floor, the highest peak allocated memory of any row). A random
model's answers are noise; only timings, counts and memory mean anything.

    python benchmarks/gpu_bench.py                          # SmolVLM-Instruct architecture (Idefics3, 2.25B), bf16
    python benchmarks/gpu_bench.py --arch qwen3-vl-4b --quant 4bit --keeps 0.5 --batch-sizes 1,8
    python benchmarks/gpu_bench.py --quant int4             # torchao int4 weight-only (compiled decode)
    python benchmarks/gpu_bench.py --tiny --device cpu      # a tiny model: checks the set-up anywhere
    python benchmarks/gpu_bench.py --arch tiny-qwen3-vl --device cpu --check-flops

Architectures: ``smolvlm-instruct`` (Idefics3, 2.25B: SigLIP-so400m/14 at 384 px, scale 3,
81 tokens a tile; SmolLM2-1.7B), ``smolvlm-256m`` (SigLIP-base/16 at 512 px, scale 4, 64
tokens a tile; SmolLM2-135M), ``qwen3-vl-4b`` (Qwen3-VL-4B-Instruct, docq's default on CUDA:
a 24-layer ViT of width 1024, patch 16, merge 2, 256 tokens a 512 px tile; a 36-layer
language model of width 2560), and the tests' tiny models ``tiny-idefics3`` (= ``--tiny``)
and ``tiny-qwen3-vl``. ``--quant``: none (bf16 on CUDA, the dtype policy's choice), 4bit
(NF4, docq's default loading), int4 (torchao), 8bit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

ARCHS = {
    "smolvlm-instruct": dict(
        image_size=384, patch_size=14, scale_factor=3,
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
        text=dict(vocab_size=49155, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=16384,
                  rope_theta=273768.0),
        longest_edge=1536,
    ),
    "qwen3-vl-4b": dict(
        family="qwen3_vl", patch_size=16,
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                    spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2560, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17]),
        text=dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                  rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                   "mrope_interleaved": True}),
        max_pixels=16384 * 32 * 32,
    ),
    "smolvlm-256m": dict(
        image_size=512, patch_size=16, scale_factor=4,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                  rope_theta=100000.0),
        longest_edge=2048,
    ),
}


def build_qwen(folder: Path, arch: str, device: str) -> Path:
    """Save a random-weight Qwen3-VL of ``arch`` (bf16) with the tests' toy tokenizer."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    import _tiny_models as tm
    import _tiny_qwen as tq

    spec = ARCHS[arch]
    tok = tq.tiny_tokenizer(tq.QWEN_CHAT_TEMPLATE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tq.SPECIAL_TOKENS}
    text = dict(spec["text"], pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"])
    config = Qwen3VLConfig(text_config=text, vision_config=spec["vision"], image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    with torch.device(device if device == "cuda" else "cpu"):
        model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    patch = spec["patch_size"]
    processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                         min_pixels=(2 * patch) ** 2 * 4, max_pixels=spec["max_pixels"])
    processor.image_mean = [0.5, 0.5, 0.5]
    processor.image_std = [0.5, 0.5, 0.5]
    tm.save_model_folder(folder, model, tok, processor)
    del model
    return folder


def build(folder: Path, arch: str, device: str) -> Path:
    """Save a random-weight model of ``arch`` (bf16) with a trained toy tokenizer."""
    if arch == "tiny-idefics3":
        import _tiny_models as tm

        return tm.build_idefics3(folder)
    if arch == "tiny-qwen3-vl":
        import _tiny_qwen as tq

        return tq.build_tiny_qwen(folder, "qwen3_vl", chat_template=True)
    if ARCHS[arch].get("family") == "qwen3_vl":
        return build_qwen(folder, arch, device)
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, \
        Idefics3Processor

    import _tiny_models as tm

    spec = ARCHS[arch]
    tok = tm.train_tokenizer(tm.IDEFICS3_SPECIAL, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                             pad_token="<|endoftext|>", chat_template=tm.SMOLVLM_CHAT_TEMPLATE)
    text = dict(spec["text"], model_type="llama", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    text["vocab_size"] = max(text["vocab_size"], len(tok))
    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=spec["scale_factor"],
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
        vision_config=dict(spec["vision"], image_size=spec["image_size"], patch_size=spec["patch_size"]),
        text_config=text,
    )
    with torch.device(device if device == "cuda" else "cpu"):
        model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    seq = (spec["image_size"] // spec["patch_size"]) ** 2 // spec["scale_factor"] ** 2
    processor = Idefics3Processor(
        Idefics3ImageProcessorPil(size={"longest_edge": spec["longest_edge"]},
                                  max_image_size={"longest_edge": spec["image_size"]}),
        tok, image_seq_len=seq, chat_template=tm.SMOLVLM_CHAT_TEMPLATE)
    tm.save_model_folder(folder, model, processor)
    del model
    return folder


def median_time(fn, runs: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_rate(device: str, sync, n: int | None = None, iters: int = 20) -> float:
    """Measured bf16 matmul FLOP/s (n x n x n; 8192 on CUDA, 1024 on the CPU)."""
    import torch

    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    iters = iters if device == "cuda" else 3
    t = median_time(lambda: [a @ b for _ in range(iters)], 3, 1, sync)
    return 2 * n**3 * iters / t


# --- FLOPs from the config ------------------------------------------------------------------

def _text_dims(config):
    t = getattr(config, "text_config", config)
    heads = t.num_attention_heads
    hd = getattr(t, "head_dim", None) or t.hidden_size // heads
    kv = getattr(t, "num_key_value_heads", None) or heads
    return t.hidden_size, t.num_hidden_layers, heads, kv, hd, t.intermediate_size, t.vocab_size


def lm_flops(config, prompt: int, new: int) -> float:
    """Prefill over ``prompt`` tokens (logits of the last one only) and ``new`` decoded tokens."""
    d, layers, heads, kv, hd, inter, vocab = _text_dims(config)
    per_token = 2 * (2 * d * heads * hd + 2 * d * kv * hd + 3 * d * inter)  # q, o, k, v, gated MLP
    prefill = layers * (prompt * per_token + 2 * prompt * prompt * heads * hd) + 2 * d * vocab  # causal QK, AV
    decode = sum(layers * (per_token + 4 * (prompt + t) * heads * hd) + 2 * d * vocab for t in range(1, new))
    return float(prefill + decode)


def vit_flops(patches: int, layers: int, width: int, inter: int) -> float:
    return float(layers * (patches * 2 * (4 * width * width + 2 * width * inter) + 4 * patches * patches * width))


def vision_flops(backend, inputs) -> float:
    """The vision encoder and connector over this question's images."""
    config = backend.model.config
    v = config.vision_config
    if backend.family == "idefics3":
        p = (v.image_size // v.patch_size) ** 2
        per = vit_flops(p, v.num_hidden_layers, v.hidden_size, v.intermediate_size)
        per += 2 * p * 3 * v.patch_size**2 * v.hidden_size + 2 * p * v.hidden_size * config.text_config.hidden_size
        return per * inputs["images_encoded"]
    total = 0.0  # Qwen: each image's patches (windowed attention ignored: an upper bound)
    m = v.spatial_merge_size
    out = getattr(v, "out_hidden_size", config.text_config.hidden_size)
    mergers = 1 + len(getattr(v, "deepstack_visual_indexes", []) or [])
    for ref in inputs["images"]:
        p = (ref.width // backend.patch) * (ref.height // backend.patch)
        total += vit_flops(p, v.depth, v.hidden_size, v.intermediate_size)
        total += 2 * p * 3 * v.temporal_patch_size * backend.patch**2 * v.hidden_size
        merged = p // (m * m)
        total += mergers * 2 * merged * (v.hidden_size * m * m) * (v.hidden_size * m * m + out)
    return total


def prompt_tokens(inputs) -> int:
    ids = inputs["model_inputs"]["input_ids"] if "model_inputs" in inputs else inputs["input_ids"]
    return int(ids.shape[-1])


def question_flops(backend, inputs, new_tokens: int) -> float:
    return vision_flops(backend, inputs) + lm_flops(backend.model.config, prompt_tokens(inputs), new_tokens)


QUESTIONS = [
    "What is the total due?", "What is the invoice number?", "What is the date of the invoice?",
    "Who is the customer?", "What is the VAT rate?", "What is the amount before tax?", "Which currency?",
    "What is the due date?", "What is the address of the seller?", "What is the first line item?",
    "How many items are listed?", "What is the unit price of the second item?", "What is the IBAN?",
    "What is the payment term?", "Who signed the invoice?", "What is the phone number?",
]


def gib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


class Recorder:
    """Prints each row (stderr) and appends it to the JSON-lines file at once."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, kind: str, **row) -> dict:
        import json

        row = {"kind": kind, **row}
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "kind" and not isinstance(v, (dict, list)))
        print(f"[{kind}] {shown}", file=sys.stderr, flush=True)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")
        return row


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS) + ["tiny-idefics3", "tiny-qwen3-vl"], default="smolvlm-instruct")
    ap.add_argument("--tiny", action="store_true", help="= --arch tiny-idefics3 (a set-up check, any device)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--quant", choices=["none", "4bit", "int4", "8bit"], default="none")
    ap.add_argument("--dtype", default="auto", help="the model dtype (docq's --dtype)")
    ap.add_argument("--decodes", default="plain,static", help="comma-separated: plain, static")
    ap.add_argument("--keeps", default="1.0,0.5", help="comma-separated keep ratios")
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--questions", type=int, default=16, help="questions per throughput run")
    ap.add_argument("--dpi", type=int, default=None, help="default: docq's")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--model-dir", type=Path, default=None, help="reuse / keep the built model here")
    ap.add_argument("--time-limit", type=float, default=None, help="start no new measurement after this many s")
    ap.add_argument("--check-flops", action="store_true",
                    help="also count one question's FLOPs with torch's FlopCounterMode (bf16/fp32 weights only)")
    ap.add_argument("--json", type=Path, default=None, help="append every row here (JSON lines)")
    args = ap.parse_args(argv)
    arch = "tiny-idefics3" if args.tiny else args.arch
    began = time.perf_counter()

    def time_left() -> bool:
        return args.time_limit is None or time.perf_counter() - began < args.time_limit

    import torch

    from conftest import write_invoice_pdf
    from docvqa_cli import pipeline, relevance
    from docvqa_cli.pipeline import page_views
    from docvqa_cli.reading import documents, tiles
    from docvqa_cli.vlm.load import load_backend, resolve_device

    record = Recorder(args.json)
    device = resolve_device(args.device)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def reset_peak():
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def peaks() -> dict:
        if not cuda:
            return {"peak_allocated_gib": None, "peak_reserved_gib": None}
        return {"peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
                "peak_reserved_gib": gib(torch.cuda.max_memory_reserved())}

    work = Path(tempfile.mkdtemp(prefix="docq-bench-"))
    folder = args.model_dir or work / "model"
    t0 = time.perf_counter()
    if not (folder / "config.json").exists():
        build(folder, arch, device)
    built_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.empty_cache()
        reset_peak()
    t0 = time.perf_counter()
    backend = load_backend(str(folder), device=device, quant=args.quant, decode="plain", dtype=args.dtype,
                           say=lambda line: None)
    load_s = time.perf_counter() - t0
    weights = peaks()
    backend.min_new_tokens = args.new_tokens  # every question decodes exactly --new-tokens tokens
    rate = matmul_rate(device, sync)
    dpi = args.dpi or documents.DEFAULT_DPI
    pages = documents.load(str(write_invoice_pdf(work / "a4.pdf")), dpi=dpi)
    page = pages[0]
    all_tiles = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    template = "# stop: eos\nAnswer with the shortest exact text printed in the document.\nQuestion: {question}"
    questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    decodes = [d.strip() for d in args.decodes.split(",") if d.strip()]
    keeps = [float(k) for k in args.keeps.split(",") if k.strip()]
    versions = (f"torch {torch.__version__}, transformers {__import__('transformers').__version__}"
                f"{', CUDA ' + str(torch.version.cuda) if cuda else ''}")
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    dtype = str(next(backend.model.parameters()).dtype).replace("torch.", "")
    record("setup", arch=arch, quant=args.quant, dtype=dtype, device=device, card=card, versions=versions,
           dpi=dpi, page_px=f"{page.image.width}x{page.image.height}", tiles=len(all_tiles), tile_px=backend.tile_px,
           build_s=round(built_s, 1), load_s=round(load_s, 1), weights_gib=weights["peak_allocated_gib"],
           bf16_tflops=round(rate / 1e12, 1), new_tokens=args.new_tokens, questions=len(questions))

    def fresh():
        """Before every timed run: no image features kept from an earlier run."""
        cache = getattr(backend, "_image_features", None)
        if cache is not None:
            cache.clear()

    def timed(fn):
        def run():
            fresh()
            fn()
        return median_time(run, args.runs, args.warmup, sync)

    rows = []
    for keep in keeps:
        if not time_left():
            break
        backend.model._previous_max_cache_length = -1  # keep 1.0's static cache length stays behind
        fresh()
        items = []
        for q in questions:
            kept = [s.tile for s in relevance.select(relevance.score(q, all_tiles), keep)]
            items.append((q, page_views(pages, kept, {}, backend.tile_px)))
        inputs = [backend.preprocess(q, v, template) for q, v in items]
        flops = statistics.mean(question_flops(backend, i, args.new_tokens) for i in inputs)
        vis = statistics.mean(vision_flops(backend, i) for i in inputs)
        images = statistics.mean(i["images_encoded"] if "images_encoded" in i else len(i["images"]) for i in inputs)
        ptok = statistics.mean(prompt_tokens(i) for i in inputs)
        if args.check_flops and keep == keeps[0]:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            fresh()
            with counter:
                backend.answer(*items[0], template, max_new_tokens=args.new_tokens)
            counted = counter.get_total_flops()
            mine = question_flops(backend, inputs[0], args.new_tokens)
            record("flop_check", counted_gflop=counted / 1e9, config_gflop=mine / 1e9, ratio=mine / counted)
        for decode in decodes:
            if not time_left():
                break
            backend.decode = decode
            q, v = items[0]
            one = [("q1", q)]
            reset_peak()
            t_n = timed(lambda: list(pipeline.answer_questions(pages, one, backend, keep=keep, prompt=template,
                                                               max_new_tokens=args.new_tokens)))
            t_1 = timed(lambda: backend.answer(q, v, template, max_new_tokens=1))
            per_token = max(0.0, (t_n - t_1) / max(1, args.new_tokens - 1))
            row = record("batch1", keep=keep, decode=decode, images=images, prompt_tokens=ptok, gflop=flops / 1e9,
                         vision_gflop=vis / 1e9, ms=t_n * 1e3, first_token_ms=t_1 * 1e3, ms_per_token=per_token * 1e3,
                         **peaks())
            rows.append(row)
            for b in sizes:
                if not time_left():
                    break
                reset_peak()

                def run_all():
                    for k in range(0, len(items), b):
                        backend.answer_batch(items[k:k + b], template, args.new_tokens)

                try:
                    t = timed(run_all)
                except torch.OutOfMemoryError:
                    record("oom", keep=keep, decode=decode, batch=b)
                    torch.cuda.empty_cache()
                    break
                floor = rate / flops
                rows.append(record("throughput", keep=keep, decode=decode, batch=b,
                                   questions_per_s=len(items) / t, floor_questions_per_s=floor,
                                   share_of_floor=(len(items) / t) / floor, **peaks()))

    def best(keep):
        tp = [r for r in rows if r["kind"] == "throughput" and r["keep"] == keep]
        return max(tp, key=lambda r: r["questions_per_s"]) if tp else None

    b1 = [r for r in rows if r["kind"] == "batch1" and r["keep"] == (0.5 if 0.5 in keeps else keeps[0])]
    half, full = best(0.5), best(1.0)
    peak = max((r["peak_allocated_gib"] for r in rows if r.get("peak_allocated_gib") is not None), default=None)
    summary = record(
        "summary", arch=arch, quant=args.quant,
        b1_ms=min(r["ms"] for r in b1) if b1 else None,
        ratio_05=half["questions_per_s"] / full["questions_per_s"] if half and full else None,
        floor_share=half["share_of_floor"] if half else None, peak_gib=peak,
        seconds=round(time.perf_counter() - began, 1), complete=time_left())

    def n(v, digits=3):
        return "na" if v is None else f"{v:.{digits}g}"

    print(f"gpu {arch} {args.quant} b1_ms={n(summary['b1_ms'], 4)} ratio_0.5={n(summary['ratio_05'])} "
          f"floor_share={n(summary['floor_share'])} peak_gib={n(summary['peak_gib'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
