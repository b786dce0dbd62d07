"""Idefics3 / SmolVLM: native tiles plus a global image, with only the kept tiles encoded.

Idefics3 normally cuts an image into a grid of square crops of its native size and adds the
whole image last ("global image"); the prompt carries ``<row_r_col_c>`` + ``<image>`` * n
for each crop and ``<global-img>`` + ``<image>`` * n for the whole. docq does the cutting
itself (``tiles.split`` at this family's native tile size), so here each kept tile is one
crop, resized to the native square like Idefics3's own crops, and each page's overview is
its global image. ``pixel_values`` holds the kept tiles and the overviews only, and the
prompt writes the row/column markers of the kept tiles only (their place in the page's
grid), so the vision encoder never sees a dropped tile.

Batching (``forward_batch``): prompts are left-padded; each item's images are padded with
all-zero images (which Idefics3 drops before its encoder) to a common count. The vision
encoder runs once per batch over the images not encoded yet. Without TIE an image's features
(after the connector) do not depend on the question, so each kept tile and each page's
overview is encoded once per document: the features are kept (``_image_features``) and
reused by every later question, and by the other questions of the same batch that keep the
same tile, passed to ``generate`` as ``mm_encoder_outputs`` (transformers >= 5.20; older
versions and TIE, whose encoder depends on the question, encode everything every time). The
features are kept under the ``Tile`` object (one per tile and document:
``pipeline.document_tiles``) or the overview image, held weakly: a tile holds its page, whose
rendered image is megabytes, so a document's features go with the document, never keep it
alive. Each image is encoded on its own (SigLIP attends within an image; the connector works
per image), so the features are the same as in one encoder call over all images.

Grids larger than the 6 x 6 markers the tokenizer has are mapped onto them proportionally.
The processor is loaded as its image processor and tokenizer (not ``AutoProcessor``):
SmolVLM's processor class needs ``num2words`` and a video processor that docq never uses.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

from docvqa_cli import prompts
from docvqa_cli.vlm.base import (
    Backend, FamilySpec, Generation, PageView, find_module, left_pad, pixels_to, processor_chat_template,
    split_box_lines,
)
from docvqa_cli.vlm.families import register

FAKE = "<fake_token_around_image>"
IMAGE = "<image>"
GLOBAL = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
MAX_MARKER = 6  # the tokenizer has <row_1_col_1> .. <row_6_col_6>
# Images (kept tiles and overviews) whose features are kept for later questions: each is
# image_seq_len x the language model's width, 64 x 576 x 4 bytes = 147 KB for SmolVLM-256M in
# float32 (81 x 2048 x 2 = 330 KB for SmolVLM-Instruct in bfloat16), 38 to 85 MB for all 256:
# the 13 images of 20 pages of 12 tiles (a document's dead entries are dropped first).
FEATURE_CACHE = 256


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


# --- TIE and the visual scorer: the encoder's layers, one overview through the encoder -------


def _square_pixels(processor, image, size: int, dtype, device):
    """The image resized to size x size and normalised like the processor does: (1, 3, S, S)."""
    import torch
    from PIL import Image

    ip = getattr(processor, "image_processor", processor)
    mean = torch.tensor(getattr(ip, "image_mean", None) or [0.5, 0.5, 0.5]).view(3, 1, 1)
    std = torch.tensor(getattr(ip, "image_std", None) or [0.5, 0.5, 0.5]).view(3, 1, 1)
    img = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3)
    x = x.permute(2, 0, 1).float() / 255.0
    x = (x - mean) / std
    return x.unsqueeze(0).to(device=device, dtype=dtype)


def encode_overview(model, processor, image, project: bool = True):
    """One overview through the vision encoder at its native square size (TIE, visual scorer)."""
    vcfg = model.config.vision_config
    size, patch = vcfg.image_size, vcfg.patch_size
    vision = TIE_SPEC.vision(model)
    dtype = next(vision.parameters()).dtype
    pixels = _square_pixels(processor, image, size, dtype, next(vision.parameters()).device)
    hidden = vision(pixel_values=pixels).last_hidden_state  # (1, P, Dv), P = (size/patch)^2
    g = size // patch
    if not project:
        return hidden[0], (g, g)
    connector = find_module(model, ("model.connector", "connector"))
    tokens = connector(hidden)[0]
    s = model.config.scale_factor
    return tokens, (g // s, g // s)


TIE_SPEC = FamilySpec(
    family="idefics3",
    layer_paths=("model.vision_model.encoder.layers", "vision_model.encoder.layers"),
    vision_paths=("model.vision_model", "vision_model"),
    encode_overview=encode_overview,
)


@register
class Idefics3Backend(Backend):
    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    tie_spec = TIE_SPEC
    max_tiles = 12
    can_ground = False
    batches = True
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
        self.eos_ids = sorted(i for i in stop if isinstance(i, int) and i >= 0)
        self.image_tokens_per_image = self.image_seq_len
        self.vision_patches_per_token = int(config.scale_factor) ** 2  # pixel shuffle: 9 for SmolVLM
        # Reuse of image features: on where generate takes pre-encoded images; reuse_tiles off
        # keeps the overviews' only (as docq did before: the benchmarks' old path).
        params = inspect.signature(model.forward).parameters
        self.reuse_features = "mm_encoder_outputs" in params
        self.reuse_tiles = True
        # id(tile or overview image) -> (weakref to it, its features (seq, D)), least recent first
        self._image_features: OrderedDict = OrderedDict()

    @classmethod
    def load_processor(cls, name: str, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer

        return SimpleNamespace(
            image_processor=AutoImageProcessor.from_pretrained(name, **kwargs),
            tokenizer=AutoTokenizer.from_pretrained(name, **kwargs),
            chat_template=processor_chat_template(name, **kwargs),
        )

    # --- the three steps --------------------------------------------------------------------

    def chat_text(self, block: str, text: str) -> str:
        """The user turn with the image block and the prompt, plus the assistant's cue."""
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            rendered = self.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                          tokenize=False)
            if IMAGE in rendered:
                return rendered.replace(IMAGE, block, 1)
        return f"<|im_start|>User:{block}{text}{END_OF_UTTERANCE}\nAssistant:"

    def preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        # Order must follow the prompt: each page's kept tiles, then its overview.
        images, sources = [], []
        for view in views:
            images.extend(tile.image for tile in view.tiles)
            sources.extend(view.tiles)
            images.append(view.overview)
            sources.append(view.overview)
        text = self.chat_text(image_block(views, self.image_seq_len), prompts.render(prompt, question))
        # size: each image straight to the native tile (the processor's default first scales
        # every image up to 4x the tile, e.g. 1536 px, then back down: 5x slower, same input).
        pixels = self.image_processor(images=[images], do_image_splitting=False, size={"longest_edge": self.tile_px},
                                      return_tensors="pt")
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
            "sources": sources,  # per image: its Tile, or the overview image (the features' keys)
            "page": (views[0].page.number, views[0].page.width, views[0].page.height) if views else None,
        }

    def forward(self, inputs: dict, max_new_tokens: int) -> dict:
        return self.forward_batch([inputs], max_new_tokens)[0]

    def tie_groups(self, inputs: list[dict]):
        import torch

        return torch.tensor([b for b, item in enumerate(inputs) for _ in range(item["images_encoded"])])

    def _vision_dtype(self):
        return next(p.dtype for p in self.model.model.vision_model.parameters())

    def _pixels(self, inputs: list[dict]):
        """(B, N, 3, H, W) pixel values and (B, N, H, W) masks, padded with all-zero images."""
        import torch

        n = max(i["pixel_values"].shape[1] for i in inputs)
        h = max(i["pixel_values"].shape[3] for i in inputs)
        w = max(i["pixel_values"].shape[4] for i in inputs)
        first = inputs[0]["pixel_values"]
        pv = torch.zeros((len(inputs), n, first.shape[2], h, w), dtype=first.dtype)
        pm = torch.zeros((len(inputs), n, h, w), dtype=inputs[0]["pixel_attention_mask"].dtype)
        for b, item in enumerate(inputs):
            v, m = item["pixel_values"][0], item["pixel_attention_mask"][0]
            pv[b, : v.shape[0], :, : v.shape[2], : v.shape[3]] = v
            pm[b, : m.shape[0], : m.shape[1], : m.shape[2]] = m
        return pv, pm

    def _encode(self, pixel_values, pixel_mask):
        """Connector features (images, seq, D) of (N, 3, H, W) images, in one encoder call."""
        import torch

        device = self.model.device
        with torch.inference_mode():
            out = self.model.model.get_image_features(
                pixels_to(pixel_values[None], device, self._vision_dtype()),
                pixel_mask[None].to(device),
                return_dict=True,
            )
        feats = out.pooler_output
        feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats
        return feats.reshape(pixel_values.shape[0], self.image_seq_len, -1)

    def _source(self, source):
        """The key object of an image's kept features (its Tile, or the overview image), or None
        where they are not kept (a tile with ``reuse_tiles`` off)."""
        from PIL import Image

        return source if self.reuse_tiles or isinstance(source, Image.Image) else None

    def _features(self, inputs: list[dict]) -> list:
        """Per item, its images' features in prompt order (flat (n * seq, D)); the images of the
        whole batch whose features are not kept yet are encoded in one call, each once."""
        import torch

        kept = self._image_features
        for key in [k for k, (ref, _) in kept.items() if ref() is None]:  # documents gone
            del kept[key]
        todo, where = [], []  # (pixels, mask) to encode; per image: ("new", k, source) or ("kept", feats)
        pending: dict[int, int] = {}  # id(source) -> its index in todo (an image shared in the batch)
        for item in inputs:
            pv, pm = item["pixel_values"][0], item["pixel_attention_mask"][0]
            places = []
            for j, source in enumerate(item["sources"]):
                source = self._source(source)
                hit = kept.get(id(source)) if source is not None else None
                if hit is not None and hit[0]() is source:
                    kept.move_to_end(id(source))
                    places.append(("kept", hit[1]))
                elif source is not None and id(source) in pending:
                    places.append(("new", pending[id(source)], source))
                else:
                    if source is not None:
                        pending[id(source)] = len(todo)
                    places.append(("new", len(todo), source))
                    todo.append((pv[j], pm[j]))
            where.append(places)
        encoded = None
        if todo:
            h = max(p.shape[1] for p, _ in todo)
            w = max(p.shape[2] for p, _ in todo)
            pv = torch.zeros((len(todo), todo[0][0].shape[0], h, w), dtype=todo[0][0].dtype)
            pm = torch.zeros((len(todo), h, w), dtype=todo[0][1].dtype)
            for k, (p, m) in enumerate(todo):
                pv[k, :, : p.shape[1], : p.shape[2]] = p
                pm[k, : m.shape[0], : m.shape[1]] = m
            encoded = self._encode(pv, pm)
        rows = []
        for places in where:
            feats = []
            for place in places:
                if place[0] == "kept":
                    feats.append(place[1])
                    continue
                f = encoded[place[1]]
                if place[2] is not None:
                    kept[id(place[2])] = (weakref.ref(place[2]), f)
                    while len(kept) > FEATURE_CACHE:
                        kept.popitem(last=False)
                feats.append(f)
            rows.append(torch.cat(feats, dim=0))
        return rows

    def forward_batch(self, inputs: list[dict], max_new_tokens: int) -> list[dict]:
        device = self.model.device
        ids, mask = left_pad([i["input_ids"] for i in inputs], self.tokenizer.pad_token_id, self.pad_multiple())
        tensors = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if self.reuse_features and self.tie is None:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            tensors["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=self._features(inputs))}
        else:
            pv, pm = self._pixels(inputs)
            tensors["pixel_values"] = pixels_to(pv, device, self._vision_dtype())
            tensors["pixel_attention_mask"] = pm.to(device)
        stop = inputs[0].get("stop", "eos")
        return self.generate_rows(tensors, max_new_tokens, stop, self.eos_ids, self.tokenizer.pad_token_id)

    def postprocess(self, outputs: dict, inputs: dict) -> Generation:
        text, confidence = self.finish(outputs["tokens"].tolist(), outputs["logprobs"].tolist(), self.eos_ids,
                                       inputs.get("stop", "eos"))
        boxes = []
        if inputs.get("page") is not None:  # the grounded prompt's box line: a box, not answer text
            text, boxes = split_box_lines(text, *inputs["page"])
        return Generation(
            text=text.strip(),
            confidence=confidence,
            image_tokens=inputs["image_tokens"],
            images_encoded=inputs["images_encoded"],
            boxes=boxes,
        )
