"""Cut a page into a grid of overlapping tiles, and make its low-resolution overview.

The grid follows the page's aspect ratio: as many tiles of ``tile_px`` pixels as the
rendered page needs, shrunk to at most ``max_tiles``. Neighbouring tiles overlap by
``overlap`` of a tile so that a text line on a border is whole in at least one of them.
A tile knows its box on the page in points and the words whose centre lies in it; its
image is cropped only when asked for, so tiling costs nothing until a tile is encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PIL import Image

from docvqa_cli.reading.documents import Page, Word

DEFAULT_TILE_PX = 512
DEFAULT_MAX_TILES = 12
DEFAULT_OVERLAP = 0.06
DEFAULT_OVERVIEW_PX = 512


@dataclass(eq=False)
class Tile:
    """One cell of a page's grid. ``box`` is (x0, y0, x1, y1) in page points."""

    page: Page
    index: int  # 0-based, row-major (reading order) within the page
    row: int
    col: int
    rows: int
    cols: int
    box: tuple[float, float, float, float]
    words: list[Word] = field(default_factory=list)

    @property
    def page_number(self) -> int:
        return self.page.number

    @property
    def key(self) -> tuple[int, int]:
        """(page number, index): unique within a document."""
        return (self.page.number, self.index)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def image(self) -> Image.Image:
        return self.page.image.crop(self.page.to_pixels(self.box))

    def contains(self, box) -> bool:
        """Whether ``box`` (points) lies wholly inside this tile."""
        x0, y0, x1, y1 = self.box
        eps = 0.5
        return box[0] >= x0 - eps and box[1] >= y0 - eps and box[2] <= x1 + eps and box[3] <= y1 + eps


def grid_shape(width_px: float, height_px: float, tile_px: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols): enough tiles of ``tile_px`` to cover the page, at most ``max_tiles``."""
    if tile_px <= 0 or max_tiles <= 0:
        raise ValueError("tile_px and max_tiles must be positive")
    rows = max(1, math.ceil(height_px / tile_px - 0.15))
    cols = max(1, math.ceil(width_px / tile_px - 0.15))
    while rows * cols > max_tiles:
        # Shrink the side whose tiles are the least stretched, so tiles stay near square.
        if cols > 1 and (rows == 1 or (width_px / (cols - 1)) <= (height_px / (rows - 1))):
            cols -= 1
        else:
            rows -= 1
    return rows, cols


def split(
    page: Page,
    tile_px: int = DEFAULT_TILE_PX,
    max_tiles: int = DEFAULT_MAX_TILES,
    overlap: float = DEFAULT_OVERLAP,
) -> list[Tile]:
    """The page's tiles in reading order (row by row, left to right)."""
    rows, cols = grid_shape(*page.pixel_size, tile_px, max_tiles)
    cell_w, cell_h = page.width / cols, page.height / rows
    pad_x, pad_y = cell_w * overlap, cell_h * overlap
    tiles = []
    for r in range(rows):
        for c in range(cols):
            box = (
                max(0.0, c * cell_w - pad_x),
                max(0.0, r * cell_h - pad_y),
                min(page.width, (c + 1) * cell_w + pad_x),
                min(page.height, (r + 1) * cell_h + pad_y),
            )
            tiles.append(Tile(page, r * cols + c, r, c, rows, cols, box))
    for w in page.words:
        cx, cy = w.cx, w.cy
        for t in tiles:
            x0, y0, x1, y1 = t.box
            if x0 <= cx < x1 and y0 <= cy < y1:
                t.words.append(w)
    return tiles


def overview(page: Page, max_px: int = DEFAULT_OVERVIEW_PX) -> Image.Image:
    """The whole page, its longest side at most ``max_px`` pixels."""
    img = page.image
    factor = max_px / max(img.width, img.height)
    if factor >= 1:
        return img.copy()
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(size, Image.Resampling.BILINEAR)
