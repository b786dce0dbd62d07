"""Tiny random-weight Qwen2.5-VL / Qwen3-VL models, saved like a hub folder (no download).

``build_tiny_qwen(folder, model_type)`` writes config + safetensors weights, a byte-level BPE
tokenizer trained on a few strings (with Qwen's special tokens), and the PIL image processor
(its ``max_pixels`` kept small so each image is a handful of tokens and tests stay fast),
with ``tests/_tiny_models.py``'s tokenizer trainer and folder writer.
The folder is then loaded through the product's own code. Its answers are noise.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|box_start|>",
    "<|box_end|>",
]

_CORPUS_EXTRA = [
    "Image 1: tile r1c2 of 4x3 (rows x columns), page 1, x 0-50%, y 25-50%: page 1, whole page:",
    '{"answer": "1,157.40", "bbox_2d": [10, 20, 300, 40]} box: [100, 200, 300, 400]',
    "system user assistant You are a helpful assistant.",
]

# Qwen2-VL's chat template, shortened: a content list renders each image as
# <|vision_start|><|image_pad|><|vision_end|> and each text as is.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# patch_size per family: Qwen2.5-VL uses 14 (factor 28), Qwen3-VL 16 (factor 32).
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def tiny_tokenizer(chat_template: str | None = None):
    from _tiny_models import CORPUS, train_tokenizer

    return train_tokenizer(
        SPECIAL_TOKENS,
        corpus=CORPUS + _CORPUS_EXTRA,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
    )


def build_tiny_qwen(
    folder: Path, model_type: str = "qwen2_5_vl", max_tokens_per_image: int = 16, chat_template: bool = False
) -> Path:
    """A tiny ``model_type`` folder; ``chat_template`` gives its tokenizer Qwen's template."""
    import torch
    from _tiny_models import save_model_folder
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(folder)
    tokenizer = tiny_tokenizer(QWEN_CHAT_TEMPLATE if chat_template else None)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = 16
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},  # sums to head_dim/2
        max_position_embeddings=4096,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    special = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    patch = PATCH[model_type]
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=patch,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64)
    if model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision.update(window_size=2 * patch * 2, fullatt_block_indexes=[1])
    elif model_type == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config
        from transformers import Qwen3VLForConditionalGeneration as Model

        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[1])
    else:
        raise ValueError(f"no tiny builder for {model_type}")
    config = Config(text_config=text, vision_config=vision, **special)
    torch.manual_seed(0)
    model = Model(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    factor = patch * 2
    processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=factor * factor * 4,
        max_pixels=factor * factor * max_tokens_per_image,
    )
    if model_type == "qwen3_vl":  # Qwen3-VL normalises with mean/std 0.5
        processor.image_mean = [0.5, 0.5, 0.5]
        processor.image_std = [0.5, 0.5, 0.5]
    return save_model_folder(folder, model, tokenizer, processor)
