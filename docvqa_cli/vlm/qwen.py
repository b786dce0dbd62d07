"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: the overview(s) and each kept tile as separate images.

Qwen's vision encoder takes images of any size (a multiple of patch_size * merge_size) and
flattens them into patches; ``image_grid_thw`` holds one (t, h, w) row per image. So each
kept tile and then the page's overview go in as separate images (the order the prompts
describe: parts of the page first, the whole page last), each after a short text that says
where it sits on the page; unkept tiles never reach the encoder. The tile size is 16 x 16
patch groups: 448 px for Qwen2/2.5-VL (patch 14), 512 px for Qwen3-VL (patch 16), so a
tile is about 256 image tokens; each image has a pixel budget (tiles 1.5 x tile_px^2,
overviews tile_px^2), capped by the image processor's own ``max_pixels``.

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
sequence from ``grid_thw``). The overview is encoded with every question (no
reuse): Qwen3-VL feeds the language model extra per-layer ("deepstack") visual features
next to the merged image tokens, so pre-encoded images would have to carry those too.

Boxes the model emits (``{"bbox_2d": [x1, y1, x2, y2]}``) are on the pixels of the
resized input image for Qwen2.5-VL, and on a 0-1000 scale of the image for Qwen2-VL
and Qwen3-VL; either way they map back to page points through the box of the image they
refer to (a ``"image": N`` key naming the image number in the prompt, or a ``"tile":
"r2c1"`` key, else the overview of the page). The ``grounded`` prompt's own format, a line
``box: [x0, y0, x1, y1]`` on a 0-1000 scale of the whole-page image, is read too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from docvqa_cli import prompts
from docvqa_cli.vlm.base import Backend, Generation, ModelBox, PageView, left_pad, pixels_to
from docvqa_cli.vlm.load import register

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


@dataclass
class ImageRef:
    """One image in the prompt: where it sits on the page and the size the encoder saw."""

    number: int  # 1-based, in prompt order
    page: int
    box: tuple[float, float, float, float]  # page points covered by the image
    width: int  # pixels after the image processor's resize
    height: int
    tile: str | None  # "r2c1" for a tile, None for an overview
    tokens: int  # image tokens in the prompt


def load_parts(source: str, **kwargs) -> QwenParts:
    """The image processor (PIL backend where the fast one needs torchvision) and tokenizer."""
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except ImportError:
        image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return QwenParts(image_processor, tokenizer)


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


@register
class QwenBackend(Backend):
    family: ClassVar[str] = "qwen-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
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
            processor = QwenParts(processor.image_processor, processor.tokenizer)
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
        if getattr(tok, "chat_template", None):
            content = [{"type": kind, "text": s} if kind == "text" else {"type": "image"} for kind, s in items]
            try:
                rendered = tok.apply_chat_template(
                    [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
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


# -- boxes the model emits -------------------------------------------------------------------

_NUM = r"-?\d+(?:\.\d+)?"
_BBOX_KEY = re.compile(r'"?bbox(?:_2d)?"?\s*:\s*\[\s*(' + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM
                       + r")\s*,\s*(" + _NUM + r")\s*\]")
_QWEN2_BOX = re.compile(r"<\|box_start\|>\s*\(\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*\)\s*,\s*\(\s*("
                        + _NUM + r")\s*,\s*(" + _NUM + r")\s*\)\s*<\|box_end\|>")
_BOX_LINE = re.compile(r"\bbox\s*:\s*\[\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*("
                       + _NUM + r")\s*\]", re.I)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


@dataclass
class FoundBox:
    """A box as the model wrote it: coordinates on its own scale, and the image it names."""

    coords: tuple[float, float, float, float]
    scale: str | None = None  # "per-mille" when the format fixes it; None: the family's own
    image: int | None = None  # 1-based image number from the prompt's labels
    tile: str | None = None  # "r2c1"
    page: int | None = None


def _objects(text: str) -> list[Any]:
    """JSON values found in the text (a fenced block, the whole text, or {...} spans)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] or [text]
    found = []
    for cand in candidates:
        cand = cand.strip()
        try:
            found.append(json.loads(cand))
            continue
        except ValueError:
            pass
        for m in re.finditer(r"\{[^{}]*\}", cand):
            try:
                found.append(json.loads(m.group(0)))
            except ValueError:
                pass
    return found


def _as_int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str):
        m = re.search(r"\d+", v)
        return int(m.group(0)) if m else None
    return None


def _tile_name(v) -> str | None:
    if isinstance(v, str):
        m = re.search(r"r\s*(\d+)\s*c\s*(\d+)", v, re.I)
        if m:
            return f"r{int(m.group(1))}c{int(m.group(2))}"
    return None


def _walk(value, out: list[dict]) -> None:
    if isinstance(value, dict):
        out.append(value)
        for v in value.values():
            if isinstance(v, (dict, list)):
                _walk(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk(v, out)


def split_answer(raw: str) -> tuple[str, list[FoundBox]]:
    """The answer text and the boxes in a model's output.

    The answer is an ``"answer"`` field when the output is JSON that has one; otherwise the
    output with any box markup removed.
    """
    boxes: list[FoundBox] = []
    answer = None
    dicts: list[dict] = []
    for obj in _objects(raw):
        _walk(obj, dicts)
    for d in dicts:
        if answer is None and isinstance(d.get("answer"), (str, int, float)) and not isinstance(d.get("answer"), bool):
            answer = str(d["answer"])
        coords = d.get("bbox_2d", d.get("bbox"))
        if isinstance(coords, list) and len(coords) == 4 and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords
        ):
            boxes.append(FoundBox(
                tuple(float(c) for c in coords),
                image=_as_int(d.get("image", d.get("image_index"))),
                tile=_tile_name(d.get("tile")),
                page=_as_int(d.get("page")),
            ))
    if not boxes:  # not valid JSON: take bbox lists from the raw text
        for m in _BBOX_KEY.finditer(raw):
            boxes.append(FoundBox(tuple(float(g) for g in m.groups())))
    for m in _QWEN2_BOX.finditer(raw):  # Qwen2-VL: <|box_start|>(x1,y1),(x2,y2)<|box_end|>
        boxes.append(FoundBox(tuple(float(g) for g in m.groups()), scale="per-mille"))
    for m in _BOX_LINE.finditer(raw):  # the grounded prompt: "box: [x0, y0, x1, y1]", 0-1000, whole page
        boxes.append(FoundBox(tuple(float(g) for g in m.groups()), scale="per-mille"))
    if answer is None:
        text = _FENCE.sub(" ", raw)
        text = re.sub(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", r"\1", text)
        text = _QWEN2_BOX.sub(" ", text)
        text = re.sub(r"\{[^{}]*bbox[^{}]*\}?", " ", text)
        text = _BOX_LINE.sub(" ", text)
        answer = text
    return " ".join(answer.split()), boxes


def _target(found: FoundBox, refs: list[ImageRef]) -> ImageRef | None:
    if found.image is not None:
        return next((r for r in refs if r.number == found.image), None)
    if found.tile is not None:
        pages = [found.page] if found.page is not None else sorted({r.page for r in refs})
        for p in pages:
            for r in refs:
                if r.page == p and r.tile == found.tile:
                    return r
        return None
    page = found.page if found.page is not None else (refs[0].page if refs else None)
    return next((r for r in refs if r.page == page and r.tile is None), None)


def map_box(found: FoundBox, refs: list[ImageRef], scale: str) -> ModelBox | None:
    """A model box in page points, through the image it refers to; None if it names none."""
    ref = _target(found, refs)
    if ref is None:
        return None
    x0, y0, x1, y1 = found.coords
    if (found.scale or scale) == "pixels":
        fx0, fx1 = x0 / ref.width, x1 / ref.width
        fy0, fy1 = y0 / ref.height, y1 / ref.height
    else:
        fx0, fx1, fy0, fy1 = x0 / 1000, x1 / 1000, y0 / 1000, y1 / 1000
    fx0, fx1 = sorted((min(max(fx0, 0.0), 1.0), min(max(fx1, 0.0), 1.0)))
    fy0, fy1 = sorted((min(max(fy0, 0.0), 1.0), min(max(fy1, 0.0), 1.0)))
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    bx0, by0, bx1, by1 = ref.box
    w, h = bx1 - bx0, by1 - by0
    return ModelBox(ref.page, bx0 + fx0 * w, by0 + fy0 * h, bx0 + fx1 * w, by0 + fy1 * h)
