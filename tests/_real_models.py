"""Small random-weight models built from the default checkpoints' real metadata.

``../shared/models/`` (or the folder in ``DOCQ_REAL_MODELS``) holds the hub files of
SmolVLM-256M-Instruct, Qwen3-VL-4B-Instruct and Qwen2.5-VL-3B-Instruct without weights
(its README). ``build(name, out)`` reads the real ``config.json``, keeps what docq's prompts
and token counts depend on (vocabulary, special-token ids, image size, patch and merge
sizes, ``scale_factor`` / ``image_seq_len``, the rope layout's proportions) and shrinks the
rest (2 language layers of width 64, 1-2 vision layers of width 32), builds random weights,
saves them as safetensors and copies every real metadata file next to them. The Qwen
folders have no ``tokenizer.json``; transformers builds the same tokenizer from
``vocab.json`` + ``merges.txt`` in 10-20 s, and ``build`` saves it beside them (the two Qwen
tokenizers differ in their added tokens: one each). The result is loaded through docq's own
code like a hub folder; its answers are noise.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = "DOCQ_REAL_MODELS"
NAMES = ("SmolVLM-256M-Instruct", "Qwen3-VL-4B-Instruct", "Qwen2.5-VL-3B-Instruct")


def models_dir() -> Path | None:
    """The real-metadata folder: ``../shared/models`` beside the checkout, else ``$DOCQ_REAL_MODELS``."""
    for cand in (ROOT.parent / "shared" / "models", os.environ.get(ENV)):
        if cand and all((Path(cand) / n / "config.json").is_file() for n in NAMES):
            return Path(cand).resolve()
    return None


def skip_reason() -> str:
    return (f"no real model metadata: neither {ROOT.parent / 'shared' / 'models'} nor ${ENV} holds "
            f"{', '.join(NAMES)}")


def _shrink_idefics3(cfg: dict) -> dict:
    text = cfg["text_config"]
    text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32)
    text.pop("perceiver_config", None)
    vision = cfg["vision_config"]  # image_size, patch_size and max_image_size stay
    vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return cfg


def _shrink_sections(sections: list[int], half: int) -> list[int]:
    """M-RoPE sections scaled to sum to ``half`` (head_dim / 2), the real proportions kept."""
    total = sum(sections)
    small = [max(1, s * half // total) for s in sections]
    small[0] += half - sum(small)
    return small


def _shrink_qwen(cfg: dict) -> dict:
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1)
    text = cfg.get("text_config")
    if text is None:  # Qwen2.5-VL: the text settings sit at the top level
        text = cfg
        small["max_window_layers"] = 2
    text.update(small)
    head_dim = 32
    if "head_dim" in text:
        text["head_dim"] = head_dim
    for key in ("rope_scaling", "rope_parameters"):
        rope = text.get(key) or cfg.get(key)
        if rope and "mrope_section" in rope:
            rope["mrope_section"] = _shrink_sections(rope["mrope_section"], head_dim // 2)
    vision = cfg["vision_config"]  # patch_size, spatial_merge_size, temporal_patch_size stay
    vision.update(hidden_size=32, intermediate_size=64, depth=2, num_heads=2, out_hidden_size=64)
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = [1]
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [1]
    return cfg


def small_config(folder: Path, small: bool = True):
    """The real config with fewer and narrower layers (a transformers config object); the real
    size with ``small=False``."""
    from transformers import AutoConfig

    cfg = json.loads((folder / "config.json").read_text())
    if small:
        cfg = _shrink_idefics3(cfg) if cfg["model_type"] == "idefics3" else _shrink_qwen(cfg)
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **cfg)


def build(name: str, out: Path, small: bool = True) -> Path:
    """A folder like the hub's for ``name``: random safetensors (small, or the real size with
    ``small=False``) + the real metadata files."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    src = models_dir() / name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(small_config(src, small)).eval()
    model.save_pretrained(out, safe_serialization=True)
    for f in src.iterdir():  # every real metadata file (the generation config among them)
        if f.name not in ("config.json", "README.md"):
            shutil.copyfile(f, out / f.name)
    if not (src / "tokenizer.json").exists():  # slow: built from vocab.json + merges.txt, saved once
        AutoTokenizer.from_pretrained(src).backend_tokenizer.save(str(out / "tokenizer.json"))
    return out
