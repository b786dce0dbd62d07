"""The boxes a Qwen model writes in its answer, and where they sit on the page.

Boxes (``{"bbox_2d": [x1, y1, x2, y2]}``) are on the pixels of the resized input image for
Qwen2.5-VL, and on a 0-1000 scale of the image for Qwen2-VL and Qwen3-VL; either way they
map back to page points through the box of the image they refer to (``ImageRef``: a
``"image": N`` key naming the image number in the prompt, or a ``"tile": "r2c1"`` key, else
the overview of the page). The ``grounded`` prompt's own format, a line ``box: [x0, y0, x1,
y1]`` on a 0-1000 scale of the whole-page image, is read too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from docvqa_cli.vlm.base import ModelBox


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
