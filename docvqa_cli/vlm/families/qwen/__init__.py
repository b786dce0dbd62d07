"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: the overview(s) and each kept tile as separate images.

Qwen's vision encoder takes images of any size (a multiple of patch_size * merge_size) and
flattens them into patches; ``image_grid_thw`` holds one (t, h, w) row per image. So each
kept tile and then the page's overview go in as separate images (the order the prompts
describe: parts of the page first, the whole page last), each after a short text that says
where it sits on the page; unkept tiles never reach the encoder. The tile size is 16 x 16
patch groups: 448 px for Qwen2/2.5-VL (patch 14), 512 px for Qwen3-VL (patch 16); each
image has a pixel budget (tiles 1.5 x tile_px^2, overviews tile_px^2), capped by the image
processor's own ``max_pixels``. A tile's image tokens follow its shape: with the real
processors an A4 invoice at 150 dpi has tiles of 210 tokens on Qwen3-VL and 272 to 306 on
Qwen2.5-VL (README, "Families"); ``image_tokens_per_image`` (256) is only the batch-size
estimate's round figure.

transformers' Qwen processors carry a video processor that needs torchvision, so this
backend uses the image processor and the tokenizer directly (``QwenParts``) and expands
each ``<|image_pad|>`` to ``grid_thw.prod() // merge_size**2`` tokens itself, in the text of
the tokenizer's chat template (or Qwen's chat format written here when it has none).

Batching (``forward_batch``): prompts (ids, attention mask, ``mm_token_type_ids``) are
left-padded and the images of all items concatenated in order (``pixel_values`` is already
a flat list of patches and ``image_grid_thw`` one row per image); Qwen's M-RoPE positions
are computed from the attention mask, so padding does not move them. With TIE adapters
(``backend.tie``) each image's patches are conditioned on its own item's question
(``tie_groups``: image -> item; ``vlm/tie.py`` finds each image's run in the packed
sequence from ``grid_thw``). Every image, kept tiles and overview, is encoded with every
question (no reuse, unlike ``idefics3``): Qwen3-VL feeds the language model extra per-layer
("deepstack") visual features next to the merged image tokens, so pre-encoded images would
have to carry and reassemble those too.

Boxes the model writes in its answer map back to page points through the image they name
(``boxes.py``). ``TIE_SPEC`` tells TIE and the visual scorer where the encoder's blocks
are, in which order the packed sequence holds each image's patches (``patch_order``) and
how one overview goes through the vision tower (``encode_overview``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from docvqa_cli import prompts
from docvqa_cli.vlm.base import (
    Backend, FamilySpec, Generation, PageView, left_pad, pixels_to, processor_chat_template,
)
from docvqa_cli.vlm.families import register
from docvqa_cli.vlm.families.qwen.boxes import ImageRef, map_box, split_answer

IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Tiles may be a little larger than tile_px (overlap, grid rounding): allow 1.5x the area
# before the image processor shrinks them, so a tile is usually encoded at full resolution.
TILE_AREA_SLACK = 1.5
# A tile (and an overview's pixel budget) is TILE_GROUPS x TILE_GROUPS merged patch groups.
TILE_GROUPS = 16


@dataclass
class QwenParts:
    """What the backend needs instead of a full processor (no video processor, no torchvision)."""

    image_processor: Any
    tokenizer: Any
    chat_template: str | None = None  # the processor's (chat_template.json), else the tokenizer's is used


def load_parts(source: str, **kwargs) -> QwenParts:
    """The image processor (PIL backend where the fast one needs torchvision) and tokenizer."""
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except ImportError:
        image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return QwenParts(image_processor, tokenizer, processor_chat_template(source, **kwargs))


def image_size(image_processor, max_pixels: int, factor: int) -> dict:
    """The image processor's size for one image: our pixel budget, capped by its own maximum."""
    size = getattr(image_processor, "size", None) or {}
    own_max = size.get("longest_edge") if hasattr(size, "get") else getattr(size, "longest_edge", None)
    own_min = size.get("shortest_edge") if hasattr(size, "get") else getattr(size, "shortest_edge", None)
    longest = min(max_pixels, own_max) if own_max else max_pixels
    shortest = min(own_min or factor**2 * 4, longest)
    return {"shortest_edge": shortest, "longest_edge": longest}


def _pct(a: float, b: float, whole: float) -> str:
    return f"{round(100 * a / whole)}-{round(100 * b / whole)}%"


def tile_label(tile, number: int) -> str:
    """The short text before a tile: which tile, of which grid, where on which page."""
    page = tile.page
    x0, y0, x1, y1 = tile.box
    return (
        f"Image {number}: tile r{tile.row + 1}c{tile.col + 1} of {tile.rows}x{tile.cols} "
        f"(rows x columns), page {page.number}, x {_pct(x0, x1, page.width)}, "
        f"y {_pct(y0, y1, page.height)}:"
    )


def overview_label(view: PageView, number: int) -> str:
    return f"Image {number}: page {view.page.number}, whole page:"


# --- TIE and the visual scorer: the encoder's blocks, packed patch order, one overview -------


def patch_order(vision, grid_thw) -> list:
    """Where each position of Qwen's packed sequence (as the vision blocks see it) sits on its
    image: one tensor per image (in ``grid_thw`` order), the row-major patch index
    ``frame * h * w + row * w + col`` of each of the image's positions, in sequence order.

    The image processor flattens an image's (h, w) patch grid block-major: merge_size x
    merge_size windows in row-major order, row-major inside each window (the order of
    ``vision_utils.get_vision_position_ids``). Qwen2.5-VL then permutes whole merge windows into
    its attention windows (``get_vision_window_index``) before the blocks and back after the
    merger; the permutation stays inside each image, so every image is one contiguous run.
    """
    import torch

    m = int(vision.config.spatial_merge_size)
    per_image, offset = [], 0
    for t, h, w in grid_thw.tolist():
        t, h, w = int(t), int(h), int(w)
        idx = torch.arange(h * w).reshape(h // m, m, w // m, m).transpose(1, 2).flatten()
        frames = (torch.arange(t)[:, None] * (h * w) + idx[None, :]).flatten()
        per_image.append(frames + offset)
        offset += t * h * w
    order = torch.cat(per_image)  # processor order -> global row-major index
    if getattr(vision, "window_size", None) and hasattr(vision, "fullatt_block_indexes"):  # Qwen2.5-VL
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid_thw.cpu(), spatial_merge_size=m,
                                                  window_size=vision.window_size, patch_size=vision.patch_size)
        unit = m * m
        order = order[(window_index[:, None] * unit + torch.arange(unit)[None, :]).flatten()]
    out, start = [], 0
    for t, h, w in grid_thw.tolist():
        n = int(t) * int(h) * int(w)
        out.append(order[start:start + n] - start)
        start += n
    return out


def encode_overview(model, processor, image, project: bool = True):
    """One overview through Qwen's vision tower at the backend's overview budget (TIE, visual scorer)."""
    import torch

    vision = TIE_SPEC.vision(model)
    ip = getattr(processor, "image_processor", processor)
    m = int(vision.config.spatial_merge_size)
    factor = int(vision.config.patch_size) * m
    budget = (TILE_GROUPS * factor) ** 2  # as QwenBackend.preprocess encodes an overview
    enc = ip(images=[image.convert("RGB")], size=image_size(ip, budget, factor), return_tensors="pt")
    param = next(vision.parameters())
    grid = enc["image_grid_thw"].to(param.device)
    out = vision(enc["pixel_values"].to(device=param.device, dtype=param.dtype), grid_thw=grid)
    _, h, w = (int(v) for v in grid[0])
    if project:  # after the merger, in the LM embedding space: row-major over (h/m, w/m)
        return out.pooler_output, (h // m, w // m)
    order = patch_order(vision, grid)[0].to(param.device)
    return out.last_hidden_state[torch.argsort(order)], (h, w)


TIE_SPEC = FamilySpec(
    family="qwen",
    layer_paths=("model.visual.blocks", "visual.blocks"),
    vision_paths=("model.visual", "visual"),
    encode_overview=encode_overview,
    patch_order=patch_order,
)


@register
class QwenBackend(Backend):
    family: ClassVar[str] = "qwen-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    tie_spec: ClassVar[FamilySpec] = TIE_SPEC
    tile_px: int = 448  # 16 x 28 (Qwen2/2.5-VL); set to 16 x 32 = 512 for Qwen3-VL
    max_tiles: int = 12
    can_ground: bool = True
    batches: ClassVar[bool] = True
    # Full module names (transformers 5 matches llm_int8_skip_modules from the start): the
    # vision tower with its merger (the projector) and the output head stay unquantised.
    keep_unquantized: ClassVar[tuple[str, ...]] = ("model.visual", "lm_head")

    def __init__(self, model: Any, processor: Any, name: str, device: Any):
        super().__init__(model, processor, name, device)
        if not isinstance(processor, QwenParts):  # a full processor (torchvision present)
            processor = QwenParts(processor.image_processor, processor.tokenizer,
                                  getattr(processor, "chat_template", None))
            self.processor = processor
        config = model.config
        self.model_type = config.model_type
        vision = config.vision_config
        self.patch = int(getattr(vision, "patch_size", processor.image_processor.patch_size))
        self.merge = int(getattr(vision, "spatial_merge_size", processor.image_processor.merge_size))
        self.factor = self.patch * self.merge
        self.tile_px = TILE_GROUPS * self.factor
        self.image_tokens_per_image = TILE_GROUPS * TILE_GROUPS
        self.vision_patches_per_token = self.merge * self.merge
        # Qwen2.5-VL grounds in absolute pixels of its input; Qwen2-VL and Qwen3-VL on 0-1000.
        self.box_scale = "pixels" if self.model_type == "qwen2_5_vl" else "per-mille"
        tok = processor.tokenizer
        self.image_token_id = getattr(config, "image_token_id", None) or tok.convert_tokens_to_ids(IMAGE_PAD)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        for t in (IM_END, "<|endoftext|>"):
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i != tok.unk_token_id and i not in eos:
                eos.append(i)
        if tok.eos_token_id in eos:  # the tokenizer's own end token first: training appends it
            eos.insert(0, eos.pop(eos.index(tok.eos_token_id)))
        self.eos_ids = eos
        pad = tok.pad_token_id
        self.pad_id = pad if pad is not None else (eos[0] if eos else 0)

    @classmethod
    def load_processor(cls, source: str, **kwargs) -> QwenParts:
        return load_parts(source, **kwargs)

    # -- preprocess -------------------------------------------------------------------------

    def _budget(self, max_pixels: int) -> dict:
        return image_size(self.processor.image_processor, max_pixels, self.factor)

    def _encode_images(self, images: list[Image.Image], max_pixels: int) -> list[tuple[Any, Any]]:
        """(pixel values, grid_thw) per image, all of one pixel budget in one processor call."""
        if not images:
            return []
        out = self.processor.image_processor(
            images=[image.convert("RGB") for image in images], size=self._budget(max_pixels), return_tensors="pt"
        )
        grids = out["image_grid_thw"]
        sizes = [int(g.prod()) for g in grids]
        return list(zip(out["pixel_values"].split(sizes), (g[None] for g in grids)))

    def chat_text(self, items: list[tuple[str, str]]) -> str:
        """The user turn (``("text", s)`` / ``("image", "")`` items) and the assistant's cue.

        Each image stands as one ``<|image_pad|>`` here; ``preprocess`` expands them.
        """
        tok = self.processor.tokenizer
        template = self.processor.chat_template or getattr(tok, "chat_template", None)
        if template:
            content = [{"type": kind, "text": s} if kind == "text" else {"type": "image"} for kind, s in items]
            try:
                rendered = tok.apply_chat_template(
                    [{"role": "user", "content": content}], chat_template=template, add_generation_prompt=True,
                    tokenize=False,
                )
            except Exception:  # a template that does not take content lists
                rendered = None
            if isinstance(rendered, str) and rendered.count(IMAGE_PAD) == sum(k == "image" for k, _ in items):
                return rendered
        system = ""
        if self.model_type in ("qwen2_vl", "qwen2_5_vl"):  # their templates add this by default
            system = f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n"
        body = "".join(s if kind == "text" else f"{VISION_START}{IMAGE_PAD}{VISION_END}" for kind, s in items)
        return f"{system}{IM_START}user\n{body}{IM_END}\n{IM_START}assistant\n"

    def preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        import torch

        text = prompts.render(prompt, question)
        tile_budget = int(TILE_AREA_SLACK * self.tile_px**2)
        overview_budget = self.tile_px**2
        items, pixels, grids, refs = [], [], [], []
        # All tiles in one processor call, all overviews in another (one budget each).
        encoded_tiles = iter(self._encode_images([t.image for v in views for t in v.tiles], tile_budget))
        encoded_overviews = iter(self._encode_images([v.overview for v in views], overview_budget))

        def add(encoded, label, page, box, tile):
            pv, grid = next(encoded)
            tokens = int(grid[0].prod()) // self.merge**2
            _, gh, gw = (int(v) for v in grid[0])
            refs.append(ImageRef(len(refs) + 1, page, box, gw * self.patch, gh * self.patch, tile, tokens))
            pixels.append(pv)
            grids.append(grid)
            items.extend([("text", label + " "), ("image", ""), ("text", "\n")])

        # Per page: its kept tiles in reading order, then the whole page (what the prompts say).
        for view in views:
            page = view.page
            for tile in view.tiles:
                add(encoded_tiles, tile_label(tile, len(refs) + 1), page.number, tuple(tile.box),
                    f"r{tile.row + 1}c{tile.col + 1}")
            whole = (0.0, 0.0, float(page.width), float(page.height))
            add(encoded_overviews, overview_label(view, len(refs) + 1), page.number, whole, None)
        items.append(("text", text))

        chat = self.chat_text(items)
        pieces = chat.split(IMAGE_PAD)
        if len(pieces) != len(refs) + 1:
            raise RuntimeError(f"prompt has {len(pieces) - 1} image placeholders for {len(refs)} images")
        expanded = pieces[0] + "".join(IMAGE_PAD * r.tokens + rest for r, rest in zip(refs, pieces[1:]))
        enc = self.processor.tokenizer(expanded, return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"]
        image_tokens = int((ids == self.image_token_id).sum())
        if image_tokens != sum(r.tokens for r in refs):
            raise RuntimeError(f"prompt has {image_tokens} image tokens, the images need {sum(r.tokens for r in refs)}")
        # 1 marks image tokens: the model needs it to give them 2-D (M-RoPE) positions; without
        # it transformers silently falls back to text positions for every token.
        model_inputs = {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"],
            "mm_token_type_ids": (ids == self.image_token_id).to(torch.int32),
        }
        if pixels:
            model_inputs["pixel_values"] = torch.cat(pixels)
            model_inputs["image_grid_thw"] = torch.cat(grids)
        return {"model_inputs": model_inputs, "images": refs, "prompt_text": expanded}

    def model_inputs(self, inputs: dict) -> dict:
        """The forward's tensors sit under ``model_inputs`` (next to the image references)."""
        return inputs["model_inputs"]

    # -- forward ----------------------------------------------------------------------------

    def forward(self, inputs: dict, max_new_tokens: int) -> dict:
        return self.forward_batch([inputs], max_new_tokens)[0]

    def forward_batch(self, inputs: list[dict], max_new_tokens: int) -> list[dict]:
        import torch

        device = getattr(self.model, "device", self.device)
        items = [i["model_inputs"] for i in inputs]
        multiple = self.pad_multiple()
        ids, mask = left_pad([m["input_ids"] for m in items], self.pad_id, multiple)
        types, _ = left_pad([m["mm_token_type_ids"] for m in items], 0, multiple)
        tensors = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types}
        with_images = [m for m in items if "pixel_values" in m]
        if with_images:
            tensors["pixel_values"] = torch.cat([m["pixel_values"] for m in with_images])
            tensors["image_grid_thw"] = torch.cat([m["image_grid_thw"] for m in with_images])
        pixels = tensors.pop("pixel_values", None)
        tensors = {k: v.to(device) for k, v in tensors.items()}
        if pixels is not None:
            tensors["pixel_values"] = pixels_to(pixels, device, next(self.model.model.visual.parameters()).dtype)
        stop = inputs[0].get("stop", "eos")
        return self.generate_rows(tensors, max_new_tokens, stop, self.eos_ids, self.pad_id)

    def tie_groups(self, inputs: list[dict]):
        """The item of each image in ``forward_batch``'s packed images (items' images in order)."""
        import torch

        return torch.tensor([b for b, item in enumerate(inputs) for _ in item["images"]], dtype=torch.long)

    # -- postprocess ------------------------------------------------------------------------

    def postprocess(self, outputs: dict, inputs: dict) -> Generation:
        raw, confidence = self.finish(outputs["tokens"].tolist(), outputs["logprobs"].tolist(), self.eos_ids,
                                      inputs.get("stop", "eos"))
        text, found = split_answer(raw)
        refs = inputs["images"]
        boxes = [b for b in (map_box(f, refs, self.box_scale) for f in found) if b is not None]
        return Generation(
            text=text,
            confidence=confidence,
            image_tokens=sum(r.tokens for r in refs),
            images_encoded=len(refs),
            boxes=boxes,
        )
