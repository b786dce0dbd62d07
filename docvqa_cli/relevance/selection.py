"""Selection: which tiles reach the vision encoder, one budget over the whole document.

``select(scores, keep)`` keeps the best ``budget(len(scores), keep) = ceil(keep x tiles)``
of them; each page's overview goes along with its kept tiles (the caller's part).
"""

from __future__ import annotations

import math

from docvqa_cli.relevance.fusion import TileScore

from docvqa_cli.options import DEFAULT_KEEP

def budget(total: int, keep: float) -> int:
    """How many of ``total`` tiles ``keep`` allows: ceil(keep x total), at least one."""
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(keep * total - 1e-9)))


def select(scores: list[TileScore], keep: float = DEFAULT_KEEP) -> list[TileScore]:
    """Mark and return the kept tiles in document order.

    Keeps ``ceil(keep x len(scores))`` tiles over the whole document: first the best tile
    of each page that has a positive score (best pages first while the budget lasts), then
    the highest scores anywhere; ties go to the earlier tile in reading order. When the
    positive scores run out, the rest of the budget goes to the tiles nearest the kept ones
    on pages already kept (a value often sits beside its label), and only then to other
    pages, so a long document spends its budget on the pages that matter rather than on the
    first pages. Each page's overview always goes along with its kept tiles; that is the
    caller's part.
    """
    n = budget(len(scores), keep)
    for s in scores:
        s.kept = False
    ranked = sorted(scores, key=lambda s: (-s.score, s.tile.key))
    kept: list[TileScore] = []
    seen_pages = set()
    for s in ranked:  # one per page with a positive score, best pages first
        if len(kept) >= n or s.score <= 0:
            break
        if s.tile.page_number not in seen_pages:
            seen_pages.add(s.tile.page_number)
            s.kept = True
            kept.append(s)
    for s in ranked:
        if len(kept) >= n or s.score <= 0:
            break
        if not s.kept:
            s.kept = True
            kept.append(s)
    if len(kept) < n:
        anchors: dict[int, list] = {}
        for s in kept:
            anchors.setdefault(s.tile.page_number, []).append(s.tile)

        def nearness(s: TileScore):
            t = s.tile
            near = anchors.get(t.page_number)
            if not near:
                return (1, 0, t.key)
            return (0, min(abs(t.row - u.row) + abs(t.col - u.col) for u in near), t.key)

        rest = sorted((s for s in scores if not s.kept), key=nearness)
        for s in rest[: n - len(kept)]:
            s.kept = True
            kept.append(s)
    return sorted(kept, key=lambda s: s.tile.key)
