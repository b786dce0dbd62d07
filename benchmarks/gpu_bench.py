"""Latency, image tokens and memory of the VLM step at keep 1.0 and 0.5 (run by hand on a GPU).

A random-weight model with a real architecture, built from its config numbers (no
download), saved and loaded through docq's own loading code (4-bit NF4 by default), on one
A4 page rendered at the default DPI. For each keep ratio it reports, as the median of
``--runs`` runs after ``--warmup`` runs: the whole question (``backend.answer``: prompt,
encoding, greedy decoding), the prefill alone (one forward pass over the prompt and images),
decode tokens per second (generation forced to ``--new-tokens`` tokens), the images and
image tokens encoded, and the peak GPU memory. A random model's answers are noise; only
the timings and counts mean anything.

    python benchmarks/gpu_bench.py                      # SmolVLM-Instruct architecture, 4-bit, CUDA
    python benchmarks/gpu_bench.py --quant none         # bf16 for comparison
    python benchmarks/gpu_bench.py --tiny --device cpu  # a tiny model: checks the set-up anywhere

Architectures: ``smolvlm-instruct`` (Idefics3, 2.25B: SigLIP-so400m/14 at 384 px, scale 3,
81 tokens a tile; SmolLM2-1.7B) and ``smolvlm-256m`` (SigLIP-base/16 at 512 px, scale 4,
64 tokens a tile; SmolLM2-135M). The default GPU model (Qwen3-VL-4B-Instruct) belongs to
the Qwen family module; its architecture is not built here.
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
    "smolvlm-256m": dict(
        image_size=512, patch_size=16, scale_factor=4,
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                  rope_theta=100000.0),
        longest_edge=2048,
    ),
}


def build(folder: Path, arch: str, device: str) -> Path:
    """Save a random-weight Idefics3 of ``arch`` (bf16) with a trained toy tokenizer."""
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="smolvlm-instruct")
    ap.add_argument("--tiny", action="store_true", help="use the tests' tiny model (a set-up check, any device)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--quant", choices=["auto", "4bit", "8bit", "none"], default="auto")
    ap.add_argument("--dpi", type=int, default=None, help="default: docq's")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--model-dir", type=Path, default=None, help="reuse / keep the built model here")
    args = ap.parse_args(argv)

    import torch

    from conftest import write_invoice_pdf
    from docvqa_cli import documents, prompts, relevance, tiles
    from docvqa_cli.pipeline import page_views
    from docvqa_cli.vlm.load import load_backend, resolve_device

    device = resolve_device(args.device)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="docq-bench-"))
    folder = args.model_dir or work / "model"
    t0 = time.perf_counter()
    if not (folder / "config.json").exists():
        if args.tiny:
            import _tiny_models as tm

            tm.build_idefics3(folder)
        else:
            build(folder, args.arch, device)
    built_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    backend = load_backend(str(folder), device=device, quant=args.quant)
    load_s = time.perf_counter() - t0
    dpi = args.dpi or documents.DEFAULT_DPI
    pages = documents.load(str(write_invoice_pdf(work / "a4.pdf")), dpi=dpi)
    page = pages[0]
    all_tiles = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    template = prompts.load("default")
    question = "What is the total due?"
    print(f"# {'tiny' if args.tiny else args.arch}, quant {args.quant}, {device}"
          f"{' (' + torch.cuda.get_device_name(0) + ')' if cuda else ''}; torch {torch.__version__}; "
          f"A4 at {dpi} dpi = {page.image.width}x{page.image.height} px, {len(all_tiles)} tiles of "
          f"{backend.tile_px} px; build {built_s:.1f} s, load {load_s:.1f} s", file=sys.stderr)

    rows = []
    for keep in (1.0, 0.5):
        kept = [s.tile for s in relevance.select(relevance.score(question, all_tiles), keep)]
        views = page_views(pages, kept, {}, backend.tile_px)
        inputs = backend.preprocess(question, views, template)
        dev = backend.model.device
        dtype = next(p.dtype for p in backend.model.model.vision_model.parameters())
        tensors = {k: inputs[k].to(dev) for k in ("input_ids", "attention_mask", "pixel_attention_mask")}
        tensors["pixel_values"] = inputs["pixel_values"].to(dev, dtype)

        def question_once():
            backend.answer(question, views, template, max_new_tokens=args.new_tokens)

        def prefill():
            with torch.inference_mode():
                backend.model(**tensors)

        def generate_n():
            with torch.inference_mode():
                backend.model.generate(**tensors, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                       do_sample=False, pad_token_id=backend.tokenizer.pad_token_id)

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        q = median_time(question_once, args.runs, args.warmup, sync)
        p = median_time(prefill, args.runs, args.warmup, sync)
        g = median_time(generate_n, args.runs, args.warmup, sync)
        decode_tps = (args.new_tokens - 1) / (g - p) if g > p else float("nan")
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        rows.append((keep, len(kept), inputs["images_encoded"], inputs["image_tokens"],
                     inputs["input_ids"].shape[1], q, p, decode_tps, peak))

    print("| keep | tiles kept | images | image tokens | prompt tokens | s / question | prefill ms | decode tok/s "
          "| peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for keep, k, imgs, itok, ptok, q, p, tps, peak in rows:
        print(f"| {keep} | {k}/{len(all_tiles)} | {imgs} | {itok} | {ptok} | {q:.3f} | {p * 1000:.1f} | {tps:.1f} "
              f"| {peak:.2f} |")
    full, half = rows
    print(f"\nimage tokens 0.5/1.0: {half[3] / full[3]:.2f}; prefill 0.5/1.0: {half[6] / full[6]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
