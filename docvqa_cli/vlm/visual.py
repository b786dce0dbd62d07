"""The visual relevance scorer: how much a tile's region of the page overview matters to a
question, seen through the model's own vision tower (the ``visual`` hook of
``relevance.score``).

Without adapters it is training-free: the overview's image tokens after the connector, pooled
per tile region, against the mean question embedding. With trained TIE adapters
(``vlm/tie.py``) it uses the adapters' cross-attention mass per tile region. The family's
``FamilySpec.encode_overview`` gives the overview's tokens and their grid; ``tune`` uses the
same region arithmetic (``patch_mass``, ``tile_masses``) for its tile-relevance loss.
"""

from __future__ import annotations

from typing import Any

import torch

from docvqa_cli.errors import UsageError
from docvqa_cli.vlm.tie import Tie, spec_for



def region_cells(box, page_w: float, page_h: float, grid: tuple[int, int]) -> list[int]:
    """Flat indices of the grid cells (covering the whole page) whose centre lies in ``box``."""
    gh, gw = grid
    x0, y0, x1, y1 = box
    cells = []
    for r in range(gh):
        cy = (r + 0.5) / gh * page_h
        if not (y0 <= cy < y1):
            continue
        for c in range(gw):
            cx = (c + 0.5) / gw * page_w
            if x0 <= cx < x1:
                cells.append(r * gw + c)
    if not cells:  # a box smaller than a cell: the cell under its centre
        r = min(gh - 1, max(0, int((y0 + y1) / 2 / page_h * gh)))
        c = min(gw - 1, max(0, int((x0 + x1) / 2 / page_w * gw)))
        cells.append(r * gw + c)
    return cells


def patch_mass(records: list[torch.Tensor], mask: torch.Tensor, image: int = 0) -> torch.Tensor:
    """Attention mass per patch of one image: for each (layer, head, question token) a softmax
    over the patches, averaged over layers, heads and real question tokens. Sums to 1."""
    masses = []
    for att in records:
        a = att[image].float()  # (heads, P, T)
        a = a.masked_fill(~mask[0][None, None, :], float("-inf")) if mask is not None else a
        p = a.softmax(dim=1)  # over patches
        p = torch.nan_to_num(p, nan=0.0)
        w = mask[0].float() if mask is not None else torch.ones(a.shape[-1], device=a.device)
        masses.append((p * w).sum(-1).mean(0) / w.sum().clamp(min=1))
    return torch.stack(masses).mean(0)


def tile_masses(mass: torch.Tensor, tiles, grid) -> torch.Tensor:
    """Mass in each tile's region (differentiable), one value per tile."""
    out = []
    for t in tiles:
        cells = region_cells(t.box, t.page.width, t.page.height, grid)
        out.append(mass[torch.tensor(cells, device=mass.device)].sum())
    return torch.stack(out)


class VisualScorer:
    """``visual(question, tiles) -> list[float]`` in [0, 1], the hook of ``relevance.score``.

    Without adapters (or ``tie`` with all gates at 0): the cosine, mapped to [0, 1], between the
    mean of the question's token embeddings and the mean of the overview's image tokens (after
    the connector, in the LM embedding space) whose cells lie in the tile's region. The overview
    tokens do not depend on the question, so they are cached per page.
    With trained adapters (``trained_steps`` > 0 in their config): the adapters' attention mass in the tile's region relative to its
    area, m, mapped to m / (1 + m) (0.5 = as much attention as a uniform spread would give).
    """

    name = "visual"

    def __init__(self, model, processor, tie: Tie | None = None, overview_px: int | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tie = tie
        self.spec = spec_for(model)
        if self.spec.encode_overview is None:
            raise UsageError(f"the visual relevance scorer does not support the {self.spec.family} family yet")
        self._cache: dict[int, tuple[torch.Tensor, tuple[int, int], Any]] = {}

    @property
    def uses_attention(self) -> bool:
        return self.tie is not None and self.tie.config.trained_steps > 0

    def __call__(self, question: str, tiles) -> list[float]:
        scores: dict[int, float] = {}
        by_page: dict[int, list] = {}
        for i, t in enumerate(tiles):
            by_page.setdefault(id(t.page), []).append(i)
        with torch.no_grad():
            for idx in by_page.values():
                page_tiles = [tiles[i] for i in idx]
                vals = self._attention(question, page_tiles) if self.uses_attention else self._cosine(question, page_tiles)
                scores.update(zip(idx, vals))
        return [scores[i] for i in range(len(tiles))]

    def _overview(self, page):
        from docvqa_cli.reading.tiles import overview

        return overview(page)

    def _cosine(self, question, tiles) -> list[float]:
        page = tiles[0].page
        hit = self._cache.get(id(page))
        if hit is None or hit[2] is not page:
            tokens, grid = self.spec.encode_overview(self.model, self.processor, self._overview(page), True)
            hit = (tokens.float(), grid, page)
            self._cache[id(page)] = hit
        tokens, grid, _ = hit
        q = self._question_vector(question).to(tokens.device)
        out = []
        for t in tiles:
            cells = region_cells(t.box, page.width, page.height, grid)
            v = tokens[cells].mean(0)
            cos = torch.nn.functional.cosine_similarity(v, q, dim=0).item()
            out.append(min(1.0, max(0.0, (cos + 1.0) / 2.0)))
        return out

    def _question_vector(self, question: str) -> torch.Tensor:
        table = self.model.get_input_embeddings()
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        if not ids:
            return torch.zeros(table.weight.shape[1])
        return table(torch.tensor(ids, device=table.weight.device)).float().mean(0)

    def _attention(self, question, tiles) -> list[float]:
        page = tiles[0].page
        with self.tie.condition(question, record=True) as cond:
            _, grid = self.spec.encode_overview(self.model, self.processor, self._overview(page), False)
        mass = patch_mass(cond.records, cond.mask)
        n = mass.numel()
        out = []
        for t in tiles:
            cells = region_cells(t.box, page.width, page.height, grid)
            m = float(mass[cells].sum()) / (len(cells) / n)
            out.append(m / (1.0 + m))
        return out


def visual_scorer(backend) -> VisualScorer:
    """The visual relevance hook for ``relevance.score(..., visual=...)`` on this backend
    (with its TIE adapters, ``backend.tie``, if it has any)."""
    return VisualScorer(backend.model, backend.processor, tie=getattr(backend, "tie", None))
