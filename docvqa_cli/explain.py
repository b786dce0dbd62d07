"""Why a tile is kept: the scores of ``relevance`` shown as a table, a JSON object, a picture.

``explain(doc, question, pages)`` tiles the pages, scores and selects the tiles as
``docq ask`` would, with no model, and returns an ``Explanation``. ``to_json`` gives the
JSON object of ``docq explain --format json`` (README; ARCHITECTURE.md for where explain
sits); ``print_table`` a rich table per page; ``draw``
one PNG per page: dropped tiles faded, kept tiles in full colour with an outline whose
tint grows with the score, and the words that earned the score highlighted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from docvqa_cli import relevance
from docvqa_cli.errors import UsageError
from docvqa_cli.options import AnswerOptions
from docvqa_cli.reading import tiles as tiles_mod
from docvqa_cli.reading.documents import Page

MAX_PICTURE_PX = 1600  # the longest side of a heat picture


@dataclass
class Explanation:
    doc: str
    question: str
    keep: float
    pages: list[Page]
    scores: list[relevance.TileScore]  # every tile of every page, in document order

    def page_scores(self, page: Page) -> list[relevance.TileScore]:
        return [s for s in self.scores if s.tile.page is page]


def explain(
    doc: str,
    question: str,
    pages: Sequence[Page],
    answer: AnswerOptions = AnswerOptions(),
    tile_px: int = tiles_mod.DEFAULT_TILE_PX,
    max_tiles: int = tiles_mod.DEFAULT_MAX_TILES,
    visual=None,
) -> Explanation:
    """Tile, score and select, exactly as the answering pipeline does (``answer.keep``, then
    the prompt's image cap ``answer.max_images``), and keep it all."""
    keep = answer.keep
    if not 0 < keep <= 1:
        raise UsageError(f"--keep must be in (0, 1], not {keep:g}")
    tiles = [t for p in pages for t in tiles_mod.split(p, tile_px=tile_px, max_tiles=max_tiles)]
    scores = relevance.score(question, tiles, visual=visual)
    relevance.cap(relevance.select(scores, keep), answer.max_images)  # as the pipeline
    return Explanation(doc, question, keep, list(pages), scores)


def _r(v: float) -> float:
    return round(float(v), 2)


def to_json(ex: Explanation) -> dict:
    """``{"doc", "question", "keep", "pages": [{"page", "width", "height", "tiles": [...]}]}``; each
    tile carries the words that earned its score (``words``: text and box), as the table shows."""
    pages = []
    for page in ex.pages:
        tiles = []
        for s in ex.page_scores(page):
            tiles.append({
                "id": s.tile.index,
                "box": [_r(v) for v in s.tile.box],
                "score": round(s.score, 4),
                "kept": s.kept,
                "parts": {k: round(v, 4) for k, v in s.parts.items()},
                "words": [{"text": w.text, "box": [_r(v) for v in w.box]} for w in s.matches],
            })
        pages.append({"page": page.number, "width": _r(page.width), "height": _r(page.height), "tiles": tiles})
    return {"doc": ex.doc, "question": ex.question, "keep": ex.keep, "pages": pages}


def print_table(ex: Explanation, console) -> None:
    """One rich table per page: tile, place, score, each scorer's part, kept or dropped, evidence."""
    from rich.table import Table

    kept_total = sum(s.kept for s in ex.scores)
    console.print(f"{ex.doc}: {ex.question!r}: keeping {kept_total} of {len(ex.scores)} tiles (--keep {ex.keep:g})")
    part_names = list(dict.fromkeys(k for s in ex.scores for k in s.parts))
    for page in ex.pages:
        scores = ex.page_scores(page)
        table = Table(title=f"page {page.number} ({page.source}, {len(page.words)} words)", title_justify="left")
        table.add_column("tile", justify="right")
        table.add_column("row,col")
        table.add_column("score", justify="right")
        for name in part_names:
            table.add_column(name, justify="right")
        table.add_column("")
        table.add_column("why (matched words)", overflow="fold")
        for s in scores:
            why = " ".join(w.text for w in s.matches[:8]) + (" ..." if len(s.matches) > 8 else "")
            table.add_row(
                str(s.tile.index),
                f"{s.tile.row},{s.tile.col}",
                f"{s.score:.3f}",
                *[f"{s.parts.get(n, 0.0):.2f}" for n in part_names],
                "[bold green]kept[/]" if s.kept else "[dim]dropped[/]",
                why,
            )
        console.print(table)


def _is_folder(output: str) -> bool:
    out = Path(output)
    return output.endswith(("/", os.sep)) or out.is_dir() or not out.suffix


def check_output(output: str) -> None:
    """Refuse an ``-o`` that is neither a .png file nor a folder, before any work."""
    if not _is_folder(output) and Path(output).suffix.lower() != ".png":
        raise UsageError(f"-o {output}: give a .png file or a folder")


def output_paths(output: str, ex: Explanation) -> list[tuple[Page, Path]]:
    """Where each page's picture goes: ``-o heat.png`` (``heat-p2.png`` for more pages) or a folder."""
    check_output(output)
    out = Path(output)
    if _is_folder(output):
        stem = Path(ex.doc).stem if ex.doc not in ("-", "<stdin>") else "stdin"
        return [(p, out / f"{stem}-p{p.number}.png") for p in ex.pages]
    if len(ex.pages) == 1:
        return [(ex.pages[0], out)]
    return [(p, out.with_name(f"{out.stem}-p{p.number}{out.suffix}")) for p in ex.pages]


def draw_page(page: Page, scores: Sequence[relevance.TileScore]) -> Image.Image:
    """The page with dropped tiles faded and kept tiles outlined and tinted by score."""
    img = page.image.convert("RGB")
    factor = min(1.0, MAX_PICTURE_PX / max(img.width, img.height))
    if factor < 1:
        img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                         Image.Resampling.LANCZOS)
    s = page.scale * factor  # picture pixels per point

    def px(box):
        return (box[0] * s, box[1] * s, box[2] * s, box[3] * s)

    faded = Image.blend(img, Image.new("RGB", img.size, (255, 255, 255)), 0.65)
    for sc in scores:  # kept tiles in full colour
        if sc.kept:
            x0, y0, x1, y1 = (round(v) for v in px(sc.tile.box))
            faded.paste(img.crop((x0, y0, x1, y1)), (x0, y0))
    top = max((sc.score for sc in scores), default=0.0) or 1.0
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for sc in scores:
        if sc.kept:
            alpha = int(25 + 70 * sc.score / top)
            draw.rectangle(px(sc.tile.box), fill=(255, 120, 0, alpha))
    for sc in scores:
        for w in sc.matches:
            draw.rectangle(px(w.box), fill=(255, 235, 0, 60), outline=(220, 0, 0, 255), width=2)
    pic = Image.alpha_composite(faded.convert("RGBA"), overlay)
    draw = ImageDraw.Draw(pic)
    font = ImageFont.load_default()
    width = max(2, round(min(img.size) / 200))
    for sc in scores:
        x0, y0, x1, y1 = px(sc.tile.box)
        if sc.kept:
            draw.rectangle((x0, y0, x1, y1), outline=(0, 150, 60, 255), width=width)
        label = f"#{sc.tile.index} {sc.score:.2f}" + (" kept" if sc.kept else "")
        tx, ty = x0 + width + 2, y0 + width + 2
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(bbox, fill=(255, 255, 255, 230))
        draw.text((tx, ty), label, fill=(0, 110, 40, 255) if sc.kept else (90, 90, 90, 255), font=font)
    return pic.convert("RGB")


def draw(ex: Explanation, output: str) -> list[Path]:
    """Write one heat picture per page; return the paths written."""
    written = []
    for page, path in output_paths(output, ex):
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_page(page, ex.page_scores(page)).save(path, format="PNG")
        written.append(path)
    return written
