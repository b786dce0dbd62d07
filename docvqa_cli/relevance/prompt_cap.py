"""The memory budget of one question: at most ``max_images`` images in its prompt.

``relevance.select`` keeps a fraction of a document's tiles, so on a long document the kept
tiles (and the pages rendered for them) grow with the page count: about 80 MB a page with a
tiny model, a 2,000-page PDF out of memory. ``cap`` runs after ``select`` and bounds what one
prompt shows. Each shown page costs its overview plus its kept tiles; pages are taken best
first (by their best tile's score, the earlier page on a tie): first each page's best tile
while two images (overview and tile) still fit, then the other kept tiles of the pages
already in, best first. So a long document spends the cap on the pages that matter, and a
short one is untouched (its selection fits).

Pages are rendered only for the tiles that survive (``documents.Page`` renders lazily), so
the cap bounds rendering too; the benchmark ``benchmarks/memory_pages.py`` shows peak memory
flat in the page count past the cap (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from docvqa_cli.options import DEFAULT_MAX_IMAGES, MIN_MAX_IMAGES
from docvqa_cli.relevance.fusion import TileScore

# DEFAULT_MAX_IMAGES (options.py; --max-images, AnswerOptions.max_images): enough for the usual one- to three-page invoice at the
# default keep (a page of 12 tiles keeps 6, plus its overview), small enough that a CPU holds
# the prompt of any document.
__all__ = ["DEFAULT_MAX_IMAGES", "cap", "images"]


def images(kept: list[TileScore]) -> int:
    """Images the model would see for ``kept``: one overview per page plus the tiles."""
    return len({s.tile.page_number for s in kept}) + len(kept)


def cap(kept: list[TileScore], max_images: int = DEFAULT_MAX_IMAGES) -> list[TileScore]:
    """``kept`` (from ``relevance.select``) cut to ``max_images`` images, in document order;
    the tiles left out get ``kept = False``. At least one page and tile always remain."""
    if max_images < MIN_MAX_IMAGES:
        raise ValueError(f"max_images must be at least {MIN_MAX_IMAGES} (a page's overview and one tile)")
    if images(kept) <= max_images:
        return kept
    ranked = sorted(kept, key=lambda s: (-s.score, s.tile.key))
    chosen: list[TileScore] = []
    pages: set[int] = set()
    used = 0
    for s in ranked:  # each page's best tile, best pages first, while overview + tile fit
        if s.tile.page_number not in pages and used + 2 <= max_images:
            pages.add(s.tile.page_number)
            chosen.append(s)
            used += 2
    taken = {id(s) for s in chosen}
    for s in ranked:  # then more tiles of the pages already shown
        if used >= max_images:
            break
        if id(s) not in taken and s.tile.page_number in pages:
            chosen.append(s)
            taken.add(id(s))
            used += 1
    for s in kept:
        if id(s) not in taken:
            s.kept = False
    return sorted(chosen, key=lambda s: s.tile.key)
