"""Idefics3 / SmolVLM: native tiles plus a global image, with only the kept tiles encoded.

Idefics3 normally cuts an image into a grid of square crops of its native size and adds the
whole image last ("global image"); the prompt carries ``<row_r_col_c>`` + ``<image>`` * n
for each crop and ``<global-img>`` + ``<image>`` * n for the whole. docq does the cutting
itself (``tiles.split`` at this family's native tile size), so here each kept tile is one
crop, resized to the native square like Idefics3's own crops, and each page's overview is
its global image. ``pixel_values`` holds the kept tiles and the overviews only, and the
prompt writes the row/column markers of the kept tiles only (their place in the page's
grid), so the vision encoder never sees a dropped tile.

Grids larger than the 6 x 6 markers the tokenizer has are mapped onto them proportionally.
The processor is loaded as its image processor and tokenizer (not ``AutoProcessor``):
SmolVLM's processor class needs ``num2words`` and a video processor that docq never uses.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from docvqa_cli import prompts
from docvqa_cli.vlm.base import Backend, Generation, PageView
from docvqa_cli.vlm.load import register

FAKE = "<fake_token_around_image>"
IMAGE = "<image>"
GLOBAL = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
MAX_MARKER = 6  # the tokenizer has <row_1_col_1> .. <row_6_col_6>


def _marker_index(i: int, n: int) -> int:
    """1-based marker for 0-based grid index i of n (proportional when n > 6)."""
    if n <= MAX_MARKER:
        return i + 1
    return min(MAX_MARKER, math.floor(i * MAX_MARKER / n) + 1)


def image_block(views: list[PageView], seq_len: int) -> str:
    """The prompt text standing for the images: kept tiles row by row, then each overview."""
    parts = []
    for view in views:
        if len(views) > 1:
            parts.append(f"Page {view.page.number}:\n")
        row = None
        for tile in view.tiles:
            if row is not None and tile.row != row:
                parts.append("\n")
            row = tile.row
            r, c = _marker_index(tile.row, tile.rows), _marker_index(tile.col, tile.cols)
            parts.append(f"{FAKE}<row_{r}_col_{c}>" + IMAGE * seq_len)
        if view.tiles:
            parts.append("\n\n")
        parts.append(f"{FAKE}{GLOBAL}" + IMAGE * seq_len + FAKE)
    return "".join(parts)


@register
class Idefics3Backend(Backend):
    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    max_tiles = 12
    can_ground = False
    # Full module names (transformers 5 matches llm_int8_skip_modules from the start).
    keep_unquantized = ("model.vision_model", "model.connector", "lm_head")

    def __init__(self, model: Any, processor: Any, name: str, device: Any):
        super().__init__(model, processor, name, device)
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        config = model.config
        vision = config.vision_config
        self.image_seq_len = int((vision.image_size // vision.patch_size) ** 2 / (config.scale_factor**2))
        self.tile_px = int(self.image_processor.max_image_size["longest_edge"])
        self.image_token_id = config.image_token_id
        stop = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)}
        gen_eos = model.generation_config.eos_token_id
        stop.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
        self.stop_ids = sorted(i for i in stop if isinstance(i, int) and i >= 0)

    @classmethod
    def load_processor(cls, name: str, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer

        return SimpleNamespace(
            image_processor=AutoImageProcessor.from_pretrained(name, **kwargs),
            tokenizer=AutoTokenizer.from_pretrained(name, **kwargs),
        )

    # --- the three steps --------------------------------------------------------------------

    def chat_text(self, block: str, text: str) -> str:
        """The user turn with the image block and the prompt, plus the assistant's cue."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if IMAGE in rendered:
                return rendered.replace(IMAGE, block, 1)
        return f"<|im_start|>User:{block}{text}{END_OF_UTTERANCE}\nAssistant:"

    def preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        # Order must follow the prompt: each page's kept tiles, then its overview.
        images = []
        for view in views:
            images.extend(tile.image for tile in view.tiles)
            images.append(view.overview)
        text = self.chat_text(image_block(views, self.image_seq_len), prompts.render(prompt, question))
        pixels = self.image_processor(images=[images], do_image_splitting=False, return_tensors="pt")
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        image_tokens = int((encoded["input_ids"] == self.image_token_id).sum())
        if image_tokens != len(images) * self.image_seq_len:
            raise RuntimeError(
                f"prompt has {image_tokens} image tokens for {len(images)} images of {self.image_seq_len}"
            )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "pixel_values": pixels["pixel_values"],
            "pixel_attention_mask": pixels["pixel_attention_mask"],
            "image_tokens": image_tokens,
            "images_encoded": len(images),
        }

    def forward(self, inputs: dict, max_new_tokens: int) -> dict:
        import torch

        device = self.model.device
        dtype = next(p.dtype for p in self.model.model.vision_model.parameters())
        tensors = {
            "input_ids": inputs["input_ids"].to(device),
            "attention_mask": inputs["attention_mask"].to(device),
            "pixel_values": inputs["pixel_values"].to(device=device, dtype=dtype),
            "pixel_attention_mask": inputs["pixel_attention_mask"].to(device),
        }
        with torch.inference_mode():
            out = self.model.generate(
                **tensors,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                output_logits=True,
                return_dict_in_generate=True,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        prompt_len = tensors["input_ids"].shape[1]
        return {"tokens": out.sequences[0, prompt_len:].cpu(), "logits": [step[0].float().cpu() for step in out.logits]}

    def postprocess(self, outputs: dict, inputs: dict) -> Generation:
        tokens = outputs["tokens"].tolist()
        n = next((i for i, t in enumerate(tokens) if t in self.stop_ids), len(tokens))
        text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True).strip()
        return Generation(
            text=text,
            confidence=token_confidence(outputs["logits"][:n], tokens[:n]),
            image_tokens=inputs["image_tokens"],
            images_encoded=inputs["images_encoded"],
        )


def token_confidence(logits: list, tokens: list[int]) -> float | None:
    """Geometric mean of the chosen tokens' probabilities (greedy decoding); None if none."""
    if not tokens:
        return None
    import torch

    logp = [torch.log_softmax(step, dim=-1)[tok].item() for step, tok in zip(logits, tokens)]
    return float(math.exp(sum(logp) / len(logp)))
