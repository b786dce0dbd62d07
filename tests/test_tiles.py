from docvqa_cli.reading import documents, tiles


def test_grid_follows_aspect_ratio_and_cap():
    assert tiles.grid_shape(1240, 1754, 512, 12) == (4, 3)  # A4 at 150 dpi
    rows, cols = tiles.grid_shape(1240, 1754, 512, 12)
    assert rows * cols <= 12 and rows >= cols
    assert tiles.grid_shape(4000, 500, 512, 6) == (1, 6)
    assert tiles.grid_shape(300, 300, 512, 12) == (1, 1)


def test_tiles_cover_page_overlap_and_hold_words(invoice_pdf):
    page = documents.load(str(invoice_pdf))[0]
    ts = tiles.split(page, tile_px=512, max_tiles=12)
    assert [t.index for t in ts] == list(range(len(ts)))
    # Every word is in at least one tile, and the tile box contains the word's centre.
    for w in page.words:
        holders = [t for t in ts if w in t.words]
        assert holders, w
    # Neighbouring tiles overlap.
    a, b = ts[0], ts[1]
    assert a.box[2] > b.box[0]
    # Union covers the page.
    assert min(t.box[0] for t in ts) == 0 and max(t.box[2] for t in ts) == page.width
    assert max(t.box[3] for t in ts) == page.height
    img = ts[0].image
    assert abs(img.width - (ts[0].box[2] - ts[0].box[0]) * page.scale) <= 2


def test_overview_is_small(invoice_pdf):
    page = documents.load(str(invoice_pdf), dpi=200)[0]
    ov = tiles.overview(page, 384)
    assert max(ov.size) == 384
    assert abs(ov.width / ov.height - page.width / page.height) < 0.02
