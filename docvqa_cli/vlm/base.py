"""The backend protocol: what a model family must do to answer over kept tiles.

A backend is split like a Hugging Face pipeline: ``preprocess`` builds the inputs (prompt
text, the overview(s) and the kept tiles only), ``forward`` runs the model (the only step
that touches the device), ``postprocess`` turns ids into a ``Generation``. ``answer`` runs
the three in order. Families subclass ``Backend`` and register in ``vlm/load.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from docvqa_cli.documents import Page
from docvqa_cli.tiles import Tile


@dataclass
class PageView:
    """One page as the model sees it: its overview and the kept tiles (in reading order)."""

    page: Page
    overview: Image.Image
    tiles: list[Tile]


@dataclass
class ModelBox:
    """A box the model emitted itself, already mapped back to page points."""

    page: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Generation:
    text: str
    confidence: float | None = None  # geometric mean of the generated tokens' probabilities
    image_tokens: int = 0  # image tokens in the prompt (what the vision encoder produced)
    images_encoded: int = 0  # images given to the vision encoder (tiles + overviews)
    boxes: list[ModelBox] = field(default_factory=list)


class Backend:
    """Base class of model families. Subclasses set the class attributes and the 3 steps."""

    family: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()  # config.model_type values this family serves
    tile_px: int = 512  # the tile size the model wants (its native crop size)
    max_tiles: int = 12
    can_ground: bool = False  # whether prompts may ask it for boxes

    def __init__(self, model: Any, processor: Any, name: str, device: Any):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device

    def preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        raise NotImplementedError

    def forward(self, inputs: dict, max_new_tokens: int) -> dict:
        raise NotImplementedError

    def postprocess(self, outputs: dict, inputs: dict) -> Generation:
        raise NotImplementedError

    def answer(self, question: str, views: list[PageView], prompt: str, max_new_tokens: int = 32) -> Generation:
        inputs = self.preprocess(question, views, prompt)
        outputs = self.forward(inputs, max_new_tokens)
        return self.postprocess(outputs, inputs)


def token_confidence(logits: list, tokens: list[int]) -> float | None:
    """Geometric mean of the chosen tokens' probabilities (greedy decoding); None if none."""
    if not tokens:
        return None
    import torch

    logp = [torch.log_softmax(step.float(), dim=-1)[tok].item() for step, tok in zip(logits, tokens)]
    return float(math.exp(sum(logp) / len(logp)))
