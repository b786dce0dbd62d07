"""TIE on the Qwen family (Qwen2.5-VL, Qwen3-VL): the patches of all images are packed into one
sequence (``grid_thw``), Qwen2.5-VL permutes them into attention windows, and 2x2 patches are
merged after the blocks. Tiny random-weight models, loaded through docq's own loading code."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from _tiny_qwen import build_tiny_qwen
from test_tie import invoice_set, options, train_8_steps_lowers_both_losses, word_page
from docvqa_cli.options import ModelOptions
from docvqa_cli.reading.tiles import split
from docvqa_cli.vlm.families import qwen as qwen_family
from docvqa_cli.vlm.tie import Tie
from docvqa_cli.vlm.visual import VisualScorer, region_cells

TYPES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module", params=TYPES)
def qwen(request, tmp_path_factory):
    from docvqa_cli.vlm.load import load_backend

    folder = build_tiny_qwen(tmp_path_factory.mktemp(request.param) / "model", request.param, max_tokens_per_image=36)
    return load_backend(str(folder), device="cpu", quant="none")


def tok(backend):
    return backend.processor.tokenizer


def vision_of(backend):
    return backend.model.model.visual


def images(backend, sizes=((3, 4), (2, 2), (4, 3)), seed=1):
    """Random images of the given (rows, cols) of merged patch groups, packed as Qwen packs them."""
    g = torch.Generator().manual_seed(seed)
    factor = backend.factor
    imgs = []
    for rows, cols in sizes:
        arr = (torch.rand(rows * factor, cols * factor, 3, generator=g) * 255).to(torch.uint8).numpy()
        imgs.append(Image.fromarray(arr))
    enc = backend.processor.image_processor(images=imgs, return_tensors="pt")
    assert [tuple(int(v) for v in r[1:]) for r in enc["image_grid_thw"]] == [(2 * r, 2 * c) for r, c in sizes]
    return enc["pixel_values"], enc["image_grid_thw"]


def encode(backend, pv, grid):
    out = vision_of(backend)(pv, grid_thw=grid)
    extra = list(getattr(out, "deepstack_features", None) or [])
    return [out.last_hidden_state, out.pooler_output, *extra]


def per_image(tokens, grid, merged=True):
    """Split merged tokens (pooler_output) per image."""
    sizes = [int(r.prod()) // (4 if merged else 1) for r in grid]
    return list(torch.split(tokens, sizes))


def set_gates(tie, value):
    with torch.no_grad():
        for b in tie.adapters.blocks.values():
            b.gate.fill_(value)


@pytest.mark.parametrize("every", [1, 2])
def test_zero_gates_are_bit_for_bit_the_base_encoder(qwen, every):
    pv, grid = images(qwen)
    with torch.no_grad():
        base = encode(qwen, pv, grid)
    tie = Tie.create(qwen.model, "tiny", tokenizer=tok(qwen), every=every)
    try:
        assert tie.spec is qwen_family.TIE_SPEC and tie.config.num_layers == 2
        with torch.no_grad(), tie.condition("What is the total amount?", record=True) as cond:
            wrapped = encode(qwen, pv, grid)
        assert len(cond.records) == len(tie.config.layers)  # the hooks really ran
        assert [a.shape[1] for a in cond.records[0]] == [int(r.prod()) for r in grid]  # one per image
        assert len(wrapped) == len(base) and all(torch.equal(a, b) for a, b in zip(base, wrapped))
        # a non-zero gate changes the output (merged tokens and deepstack too), only inside the block
        set_gates(tie, 0.5)
        with torch.no_grad():
            with tie.condition("What is the total amount?"):
                changed = encode(qwen, pv, grid)
            outside = encode(qwen, pv, grid)
        assert all(not torch.allclose(a, b) for a, b in zip(base, changed))
        assert all(torch.equal(a, b) for a, b in zip(base, outside))
    finally:
        tie.detach()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(base, encode(qwen, pv, grid)))


def test_one_question_per_image_group_in_the_packed_sequence(qwen):
    pv, grid = images(qwen)
    tie = Tie.create(qwen.model, "tiny", tokenizer=tok(qwen))
    set_gates(tie, 0.5)
    questions = ["What is the total amount?", "What is the invoice number?"]
    try:
        with torch.no_grad():
            alone = []
            for q in questions:
                with tie.condition(q):
                    alone.append(per_image(encode(qwen, pv, grid)[1], grid))
            with tie.condition(questions, groups=torch.tensor([0, 1, 0])):
                mixed = per_image(encode(qwen, pv, grid)[1], grid)
        # each image's tokens are exactly what its own question alone gives (and differ from the other's)
        for i, row in enumerate([0, 1, 0]):
            assert torch.allclose(mixed[i], alone[row][i], atol=1e-5)
            assert not torch.allclose(mixed[i], alone[1 - row][i], atol=1e-4)
    finally:
        tie.detach()


def test_only_adapters_get_gradients(qwen):
    pv, grid = images(qwen)
    tie = Tie.create(qwen.model, "tiny", tokenizer=tok(qwen))
    try:
        for p in qwen.model.parameters():
            p.requires_grad_(False)
        tie.checkpointing = True  # the path training takes
        with tie.condition(["total", "date"], groups=torch.tensor([1, 0, 1])):
            out = encode(qwen, pv, grid)
        sum(o.pow(2).mean() for o in out).backward()
        assert all(b.gate.grad is not None and b.gate.grad.abs().sum() > 0 for b in tie.adapters.blocks.values())
        assert all(p.grad is None for p in qwen.model.parameters())
    finally:
        tie.detach()


def test_save_load_round_trip(qwen, tmp_path):
    pv, grid = images(qwen)
    tie = Tie.create(qwen.model, "tiny-qwen", tokenizer=tok(qwen), every=2)
    set_gates(tie, 0.3)
    with torch.no_grad(), tie.condition("amount due"):
        before = encode(qwen, pv, grid)
    tie.save(tmp_path / "a")
    tie.detach()
    loaded = Tie.load(tmp_path / "a", qwen.model, tokenizer=tok(qwen))
    try:
        assert loaded.config.family == "qwen" and loaded.config.model_type == qwen.model.config.model_type
        with torch.no_grad(), loaded.condition("amount due"):
            after = encode(qwen, pv, grid)
        assert all(torch.equal(a, b) for a, b in zip(before, after))
    finally:
        loaded.detach()


# ---- the patch order of the packed sequence ----------------------------------------------------


def test_patch_order_puts_each_patch_where_it_is_on_the_image(qwen):
    """Block 0's input is the patch embedding (no mixing yet): with the learned position table
    zeroed, a patch's vector says only what pixels it holds. Dark patches, mapped through
    ``qwen.patch_order``, must land exactly where they were drawn, for every image."""
    vision = vision_of(qwen)
    p = qwen.patch
    saved = None
    if hasattr(vision, "pos_embed"):  # Qwen3-VL adds a learned absolute position table
        saved = vision.pos_embed.weight.detach().clone()
        with torch.no_grad():
            vision.pos_embed.weight.zero_()
    shapes = [(6, 8), (4, 4), (8, 6)]  # patches (rows, cols), non-square both ways
    marks = [{(1, 5), (4, 2), (5, 7)}, {(0, 0), (3, 1)}, {(7, 0), (2, 5), (6, 3)}]
    imgs = []
    for (h, w), cells in zip(shapes, marks):
        img = Image.new("RGB", (w * p, h * p), "white")
        d = ImageDraw.Draw(img)
        for r, c in cells:
            d.rectangle((c * p, r * p, c * p + p - 1, r * p + p - 1), fill="black")
        imgs.append(img)
    enc = qwen.processor.image_processor(images=imgs, return_tensors="pt")
    grid = enc["image_grid_thw"]
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("x", args[0] if args else kwargs["hidden_states"])

    handle = vision.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            vision(enc["pixel_values"], grid_thw=grid)
    finally:
        handle.remove()
        if saved is not None:
            with torch.no_grad():
                vision.pos_embed.weight.copy_(saved)
    x = seen["x"]
    start = 0
    orders = qwen_family.patch_order(vision, grid)
    for (h, w), cells, order in zip(shapes, marks, orders):
        seg = x[start:start + h * w]
        start += h * w
        on_grid = seg[torch.argsort(order)]  # row-major (row, col)
        white = on_grid.mode(dim=0).values
        dark = {divmod(i, w) for i in range(h * w) if not torch.allclose(on_grid[i], white, atol=1e-5)}
        assert dark == cells
    assert start == x.shape[0]


# ---- the visual relevance scorer ---------------------------------------------------------------


@pytest.fixture
def neutral(qwen):
    """Position effects off: rotary frequencies 0 (cos 1, sin 0), no learned position table,
    full attention in every block (Qwen2.5-VL's windows depend on position). The encoder is
    then permutation-equivariant per image, so identical patches give identical tokens."""
    vision = vision_of(qwen)
    inv = vision.rotary_pos_emb.inv_freq.clone()
    pos = vision.pos_embed.weight.detach().clone() if hasattr(vision, "pos_embed") else None
    full = getattr(vision, "fullatt_block_indexes", None)
    with torch.no_grad():
        vision.rotary_pos_emb.inv_freq.zero_()
        if pos is not None:
            vision.pos_embed.weight.zero_()
    if full is not None:
        vision.fullatt_block_indexes = list(range(len(vision.blocks)))
    yield qwen
    with torch.no_grad():
        vision.rotary_pos_emb.inv_freq.copy_(inv)
        if pos is not None:
            vision.pos_embed.weight.copy_(pos)
    if full is not None:
        vision.fullatt_block_indexes = full


def test_visual_scorer_mechanics(neutral):
    qwen = neutral
    scorer = VisualScorer(qwen.model, qwen.processor)
    page = word_page()
    tiles = split(page, tile_px=96, max_tiles=9, overlap=0.0)
    assert len(tiles) == 9
    s = scorer("What is the total amount?", tiles)
    assert all(0.0 <= v <= 1.0 for v in s)
    assert s == scorer("What is the total amount?", tiles)  # deterministic (and cached per page)
    tokens, grid = qwen_family.TIE_SPEC.encode_overview(qwen.model, qwen.processor, scorer._overview(page), True)
    assert tokens.shape == (grid[0] * grid[1], qwen.model.get_input_embeddings().weight.shape[1])
    word = next(i for i, t in enumerate(tiles) if t.words)
    far = [i for i, t in enumerate(tiles) if abs(t.row - tiles[word].row) + abs(t.col - tiles[word].col) > 1]
    blank = [s[i] for i in far]
    assert max(blank) - min(blank) < 1e-6
    assert abs(s[word] - blank[0]) > 1e-6

    # the question's embedding made the word tile's pooled token: that tile ranks first, cosine 1
    cells = region_cells(tiles[word].box, page.width, page.height, grid)
    table = qwen.model.get_input_embeddings().weight
    q_id = tok(qwen)("total", add_special_tokens=False)["input_ids"]
    saved = table[q_id].detach().clone()
    with torch.no_grad():
        table[q_id] = tokens[cells].mean(0).to(table.dtype)
    try:
        s2 = VisualScorer(qwen.model, qwen.processor)("total", tiles)
    finally:
        with torch.no_grad():
            table[q_id] = saved
    assert max(range(9), key=lambda i: s2[i]) == word
    assert s2[word] == pytest.approx(1.0, abs=1e-5)


def test_visual_scorer_attention_mass_with_trained_adapters(qwen):
    tie = Tie.create(qwen.model, "tiny", tokenizer=tok(qwen))
    try:
        scorer = VisualScorer(qwen.model, qwen.processor, tie=tie)
        assert not scorer.uses_attention
        tie.config.trained_steps = 1
        assert scorer.uses_attention
        page = word_page()
        tiles = split(page, tile_px=96, max_tiles=9, overlap=0.0)
        s = scorer("What is the total amount?", tiles)
        assert all(0.0 < v < 1.0 for v in s)
        assert s == scorer("What is the total amount?", tiles)
        _, grid = qwen_family.TIE_SPEC.encode_overview(qwen.model, qwen.processor, scorer._overview(page), False)
        n = grid[0] * grid[1]
        areas = [len(region_cells(t.box, page.width, page.height, grid)) / n for t in tiles]
        assert sum(areas) == pytest.approx(1.0)  # the tiles partition the patch grid
        assert sum(v / (1 - v) * a for v, a in zip(s, areas)) == pytest.approx(1.0, abs=1e-4)
    finally:
        tie.detach()


# ---- training (the Python API of docq tune), loading, answering ---------------------------------



@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    return build_tiny_qwen(tmp_path_factory.mktemp("q3") / "model", "qwen3_vl", max_tokens_per_image=36,
                           chat_template=True)


def small_tiles(backend):
    """Tiles of 2x2 merged groups (64 px), so a page at 40 dpi has several (the default is 16x16)."""
    backend.tile_px = 2 * backend.factor
    return backend


def test_training_steps_lower_both_losses(qwen3_folder, tmp_path):
    from docvqa_cli.tune import read_examples
    from docvqa_cli.vlm.load import load_backend

    backend = small_tiles(load_backend(str(qwen3_folder), device="cpu", quant="none"))
    examples = read_examples(invoice_set(tmp_path))[:4]
    tie = Tie.create(backend.model, backend.name, tokenizer=tok(backend), every=1)
    try:
        prepared = train_8_steps_lowers_both_losses(backend, tie, examples, tmp_path / "out")
        assert all(p.positives and len(p.page_tiles) > 1 for p in prepared)  # the relevance loss fires
    finally:
        tie.detach()


def test_tune_load_and_answer_through_the_pipeline(qwen3_folder, tmp_path):
    from docvqa_cli import pipeline
    from docvqa_cli.reading import documents
    from docvqa_cli.reading import tiles as tiles_mod
    from docvqa_cli.tune import tune
    from docvqa_cli.vlm.load import load_backend

    data = invoice_set(tmp_path)
    out = tmp_path / "adapters"
    backend = small_tiles(load_backend(str(qwen3_folder), device="cpu", quant="none"))
    metrics = tune(data, backend, out, options(steps=3, checkpoint_every=0, heldout=0.25), progress=False,
                   say=lambda s: None)
    assert metrics["steps"] == 3 and metrics["heldout_after"]["relevance_loss"] is not None
    assert metrics["heldout_after"]["visual_scorer"] == "attention"

    # `docq ask --tie DIR`: the base model named in the adapters' config, adapters on, visual scorer on
    backend, visual = pipeline.open_backend(ModelOptions(device="cpu", tie=str(out)))
    assert backend.name == f"{qwen3_folder}+tie" and backend.tie.config.trained_steps == 3
    assert visual is not None and visual.uses_attention
    pages = documents.load(str(tmp_path / "inv0.pdf"), dpi=40, ocr=None)
    questions = [("1", "What is the total due?"), ("2", "What is the invoice number?")]
    records = list(pipeline.answer_questions(pages, questions, backend, max_new_tokens=4, visual=visual))
    assert [r.question_id for r in records] == ["1", "2"]
    assert all(r.error is None and r.model.endswith("+tie") and isinstance(r.answer, str) for r in records)
    ts = tiles_mod.split(pages[0], tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    s = visual("What is the total due?", ts)
    assert len(s) == len(ts) and all(0 <= v <= 1 for v in s)
    backend.tie.detach()

    # the CLI: docq ask DOC Q... --tie DIR (no --model)
    import json

    from click.testing import CliRunner

    from docvqa_cli.cli import main

    result = CliRunner().invoke(main, ["ask", str(tmp_path / "inv0.pdf"), "What is the total due?", "Date?",
                                       "--tie", str(out), "--device", "cpu", "--max-new-tokens", "3", "--dpi", "40"],
                       env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(r["model"].endswith("+tie") and r["error"] is None for r in rows)
