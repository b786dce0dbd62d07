"""TIE adapters: zero-gate identity, save/load, the visual relevance scorer's mechanics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from docvqa_cli.errors import InputError, UsageError
from docvqa_cli.options import ModelOptions
from docvqa_cli.reading.documents import Page, Word
from docvqa_cli.reading.tiles import split
from docvqa_cli.vlm.families import idefics3
from docvqa_cli.vlm.tie import Tie, layer_plan, use_tie
from docvqa_cli.vlm.visual import VisualScorer, region_cells, visual_scorer

WORDS = ["total", "invoice", "date", "amount", "due", "what", "is", "the"]


class WordTokenizer:
    """A tiny whitespace tokenizer over a fixed vocabulary (only what the scorer calls)."""

    def __init__(self, words):
        self.vocab = {w: i + 2 for i, w in enumerate(words)}
        self.unk_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.get(w, 1) for w in text.lower().split()]}


class Processor:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.image_processor = type("IP", (), {"image_mean": [0.5] * 3, "image_std": [0.5] * 3})()


def tiny_idefics3(layers=4, seed=0):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=2, image_size=64, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=64, pad_token_id=0),
        scale_factor=2, image_token_id=63, pad_token_id=0,
    )
    return Idefics3ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_idefics3()


def pixels(seed=1, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=g)


def test_layer_plan():
    assert layer_plan(4, 1) == [0, 1, 2, 3]
    assert layer_plan(4, 2) == [1, 3]
    assert layer_plan(5, 2) == [1, 3, 4]  # the last layer always gets one
    with pytest.raises(UsageError):
        layer_plan(4, 0)


@pytest.mark.parametrize("every", [1, 2])
def test_zero_gates_are_bit_for_bit_the_base_encoder(model, every):
    vision = model.model.vision_model
    x = pixels()
    with torch.no_grad():
        base = vision(pixel_values=x).last_hidden_state
    tie = Tie.create(model, "tiny", tokenizer=WordTokenizer(WORDS), every=every)
    try:
        assert sorted(int(k) for k in tie.adapters.blocks) == layer_plan(4, every)
        with torch.no_grad(), tie.condition("what is the total") as cond:
            cond.record = True
            wrapped = vision(pixel_values=x).last_hidden_state
        assert len(cond.records) == len(layer_plan(4, every))  # the hooks really ran
        assert torch.equal(base, wrapped)
        # A non-zero gate changes the output, and only inside the condition block.
        with torch.no_grad():
            for b in tie.adapters.blocks.values():
                b.gate.fill_(0.5)
            with tie.condition("what is the total"):
                changed = vision(pixel_values=x).last_hidden_state
            outside = vision(pixel_values=x).last_hidden_state
        assert not torch.allclose(base, changed)
        assert torch.equal(base, outside)
    finally:
        tie.detach()
    with torch.no_grad():
        assert torch.equal(base, vision(pixel_values=x).last_hidden_state)


def test_different_questions_condition_differently(model):
    tie = Tie.create(model, "tiny", tokenizer=WordTokenizer(WORDS))
    vision = model.model.vision_model
    try:
        with torch.no_grad():
            for b in tie.adapters.blocks.values():
                b.gate.fill_(0.5)
            with tie.condition("total due"):
                a = vision(pixel_values=pixels()).last_hidden_state
            with tie.condition("invoice date"):
                b_ = vision(pixel_values=pixels()).last_hidden_state
            # one question per image: rows follow the groups
            groups = torch.tensor([0, 1, 0])
            with tie.condition(["total due", "invoice date"], groups=groups):
                mixed = vision(pixel_values=pixels()).last_hidden_state
        assert not torch.allclose(a, b_)
        assert torch.allclose(mixed[0], a[0], atol=1e-5) and torch.allclose(mixed[1], b_[1], atol=1e-5)
    finally:
        tie.detach()


def test_only_adapters_get_gradients(model):
    tie = Tie.create(model, "tiny", tokenizer=WordTokenizer(WORDS))
    vision = model.model.vision_model
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with tie.condition("total"):
            out = vision(pixel_values=pixels()).last_hidden_state
        out.pow(2).mean().backward()
        gates = [b.gate.grad for b in tie.adapters.blocks.values()]
        assert all(g is not None and g.abs().sum() > 0 for g in gates)
        assert all(p.grad is None for p in model.parameters())
    finally:
        tie.detach()


def test_save_load_round_trip(model, tmp_path):
    tie = Tie.create(model, "tiny-base", tokenizer=WordTokenizer(WORDS), every=2)
    with torch.no_grad():
        for b in tie.adapters.blocks.values():
            b.gate.fill_(0.3)
    vision = model.model.vision_model
    with torch.no_grad(), tie.condition("amount due"):
        before = vision(pixel_values=pixels()).last_hidden_state
    tie.save(tmp_path / "a")
    tie.detach()
    cfg = json.loads((tmp_path / "a" / "tie_config.json").read_text())
    assert cfg["base_model"] == "tiny-base" and cfg["layers"] == [1, 3] and cfg["family"] == "idefics3"
    loaded = Tie.load(tmp_path / "a", model, tokenizer=WordTokenizer(WORDS))
    try:
        assert next(loaded.adapters.parameters()).dtype == torch.float32  # fp32 on CPU
        with torch.no_grad(), loaded.condition("amount due"):
            after = vision(pixel_values=pixels()).last_hidden_state
        assert torch.equal(before, after)
    finally:
        loaded.detach()


def test_load_rejects_bad_folders(model, tmp_path):
    with pytest.raises(InputError, match="not a TIE adapter folder"):
        Tie.load(tmp_path, model)
    tie = Tie.create(model, "tiny", tokenizer=WordTokenizer(WORDS))
    tie.save(tmp_path / "a")
    tie.detach()
    other = tiny_idefics3(layers=2)
    with pytest.raises(UsageError, match="encoder layers"):
        Tie.load(tmp_path / "a", other)


# ---- the visual relevance scorer -----------------------------------------------------------


def word_page(word_at=(1, 2), rows=3, cols=3, size=96) -> Page:
    """A white page of rows x cols cells of ``size`` px (1 px = 1 pt) with a black word block in one."""
    img = Image.new("RGB", (cols * size, rows * size), "white")
    r, c = word_at
    d = ImageDraw.Draw(img)
    x0, y0 = c * size + 20, r * size + 35
    d.rectangle((x0, y0, x0 + 55, y0 + 22), fill="black")
    d.text((x0 + 4, y0 + 5), "TOTAL", fill="white")
    words = [Word("TOTAL", x0, y0, x0 + 55, y0 + 22, 0)]
    return Page("synthetic", 1, float(img.width), float(img.height), img, 1.0, words)


def test_region_cells_cover_the_page():
    grid = (4, 4)
    assert region_cells((0, 0, 100, 100), 100, 100, grid) == list(range(16))
    assert region_cells((0, 0, 50, 50), 100, 100, grid) == [0, 1, 4, 5]
    assert region_cells((60, 60, 61, 61), 100, 100, grid) == [10]  # smaller than a cell


def test_visual_scorer_mechanics(model):
    # Without position embeddings, identical patches give identical tokens whatever the weights,
    # so every blank tile must score the same and the word's tile differently.
    m = tiny_idefics3(seed=3)
    with torch.no_grad():
        m.model.vision_model.embeddings.position_embedding.weight.zero_()
    tok = WordTokenizer(WORDS)
    scorer = VisualScorer(m, Processor(tok))
    page = word_page()
    tiles = split(page, tile_px=96, max_tiles=9, overlap=0.0)
    assert len(tiles) == 9
    s = scorer("what is the total", tiles)
    assert all(0.0 <= v <= 1.0 for v in s)
    assert s == scorer("what is the total", tiles)  # deterministic (and cached per page)
    word_tile = next(i for i, t in enumerate(tiles) if t.words)
    # tiles whose region shares no pixel-shuffled token with the word's: (8px patch * 2) cells
    blank = [s[i] for i, t in enumerate(tiles) if abs(t.row - tiles[word_tile].row) + abs(t.col - tiles[word_tile].col) > 1]
    assert max(blank) - min(blank) < 1e-6
    assert abs(s[word_tile] - blank[0]) > 1e-6

    # Make the question's embedding the word tile's pooled token: that tile must then rank first
    # with cosine 1 (score 1.0). This checks the region mapping and the pooling end to end.
    tokens, grid = idefics3.TIE_SPEC.encode_overview(m, Processor(tok), scorer._overview(page), True)
    cells = region_cells(tiles[word_tile].box, page.width, page.height, grid)
    with torch.no_grad():
        m.get_input_embeddings().weight[tok.vocab["total"]] = tokens[cells].mean(0)
    scorer2 = VisualScorer(m, Processor(tok))
    s2 = scorer2("total", tiles)
    assert max(range(9), key=lambda i: s2[i]) == word_tile
    assert s2[word_tile] == pytest.approx(1.0, abs=1e-5)


def test_visual_scorer_uses_attention_mass_with_trained_adapters(model):
    tok = WordTokenizer(WORDS)
    tie = Tie.create(model, "tiny", tokenizer=tok)
    try:
        scorer = VisualScorer(model, Processor(tok), tie=tie)
        assert not scorer.uses_attention  # untrained: the training-free score
        tie.config.trained_steps = 1
        assert scorer.uses_attention
        page = word_page()
        tiles = split(page, tile_px=96, max_tiles=9, overlap=0.0)
        s = scorer("what is the total", tiles)
        assert all(0.0 < v < 1.0 for v in s)
        # the 9 tiles partition the 8x8 patch grid: mass = density * area share sums to 1
        areas = [len(region_cells(t.box, page.width, page.height, (8, 8))) / 64 for t in tiles]
        assert sum(a for a in areas) == pytest.approx(1.0)
        assert sum(v / (1 - v) * a for v, a in zip(s, areas)) == pytest.approx(1.0, abs=1e-4)
    finally:
        tie.detach()


# ---- training (docq tune), loading with --tie, answering ---------------------------------------

from conftest import INVOICE_LINES, write_invoice_pdf  # noqa: E402

INVOICES = [("INV-20417", "1,157.40"), ("INV-30988", "842.10"), ("INV-41230", "77.25"), ("INV-55001", "310.00")]


def invoice_set(folder):
    """Four made-up invoices and their questions; answers are single printed words."""
    records = []
    for n, (number, total) in enumerate(INVOICES):
        lines = [l for l in INVOICE_LINES if not l[1].startswith(("Invoice No", "Total due"))]
        lines += [((400, 100), f"Invoice No: {number}", 10), ((300, 700), f"Total due: EUR {total}", 12)]
        pdf = write_invoice_pdf(folder / f"inv{n}.pdf", lines)
        records.append({"doc": pdf.name, "question": "What is the invoice number?", "answer": number})
        records.append({"doc": pdf.name, "question": "What is the total due?", "answer": total, "page": 1})
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from _tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("tiny") / "model")


def options(**kw):
    from docvqa_cli.tune import TuneOptions

    base = dict(lr=1e-2, dpi=40, ocr=None, heldout=0.25, checkpoint_every=3, gradient_checkpointing=True)
    base.update(kw)
    return TuneOptions(**base)


def test_read_examples_errors(tmp_path):
    from docvqa_cli.tune import read_examples, split_heldout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"doc": "a.pdf", "question": "q?", "answer": "x"}\n{"doc": "a.pdf", "question": "q"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2.*answer"):
        read_examples(bad)
    data = invoice_set(tmp_path)
    ex = read_examples(data)
    assert len(ex) == 8 and all(Path(e.doc).is_file() for e in ex)  # relative to the file's folder
    train, held = split_heldout(ex, 0.25)
    assert len(held) == 2 and len(train) == 6
    assert split_heldout(ex, 0.25) == (train, held)  # deterministic


def train_8_steps_lowers_both_losses(backend, tie, examples, out):
    """Train 8 steps; assert the answer loss and the tile-relevance loss both went down over
    ``examples``; return the prepared examples (shared by the Idefics3 and Qwen tests)."""
    from docvqa_cli.tune import Trainer

    trainer = Trainer(backend, tie, options(heldout=0.0, steps=8, checkpoint_every=0), say=lambda s: None)
    prepared = [trainer.prepare(e) for e in examples]

    def mean_losses():
        with torch.no_grad():
            vals = [trainer.loss(p) for p in prepared]
        assert all(v[2] is not None for v in vals)  # the relevance loss fires for every example
        return sum(v[1] for v in vals) / len(vals), sum(v[2] for v in vals) / len(vals)

    lm0, rel0 = mean_losses()
    metrics = trainer.train(examples, out, progress=False)
    lm1, rel1 = mean_losses()
    assert metrics["steps"] == 8
    assert rel1 < rel0 and lm1 < lm0, (lm0, lm1, rel0, rel1)
    return prepared


def test_training_steps_lower_the_loss(tiny_folder, tmp_path):
    from docvqa_cli.tune import read_examples
    from docvqa_cli.vlm.load import load_backend

    backend = load_backend(str(tiny_folder), device="cpu", quant="none")
    examples = read_examples(invoice_set(tmp_path))[:4]
    tie = Tie.create(backend.model, backend.name, tokenizer=backend.tokenizer, every=1)
    try:
        prepared = train_8_steps_lowers_both_losses(backend, tie, examples, tmp_path / "out")
        assert all(p.positives for p in prepared)  # grounding found every answer's tile
        assert any(float(b.gate.detach().abs()) > 0 for b in tie.adapters.blocks.values())
    finally:
        tie.detach()


def test_tune_save_resume_load_and_answer(tiny_folder, tmp_path, docq_env, python):
    import subprocess

    from docvqa_cli import pipeline
    from docvqa_cli.reading import documents
    from docvqa_cli.tune import tune
    from docvqa_cli.vlm.load import load_backend

    data = invoice_set(tmp_path)
    out = tmp_path / "adapters"
    cmd = [python, "-m", "docvqa_cli", "tune", str(data), "--model", str(tiny_folder), "--out", str(out),
           "--steps", "4", "--checkpoint-every", "2", "--dpi", "40", "--lr", "0.01", "--device", "cpu"]
    run = subprocess.run(cmd, env=docq_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # stdout: one JSON report; progress went to stderr
    assert report["steps"] == 4 and report["heldout_examples"] == 1
    assert report["heldout_after"]["examples"] == 1 and report["heldout_after"]["lm_loss"] is not None
    assert (out / "tie_config.json").is_file() and (out / "adapters.safetensors").is_file()
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2

    # resume goes on from the checkpoint (step 2) to the new total
    backend = load_backend(str(tiny_folder), device="cpu", quant="none")
    lines = []
    m = tune(data, backend, out, options(steps=5, checkpoint_every=2), progress=False, say=lines.append)
    assert any("resuming" in l and "step 2" in l for l in lines) and m["steps"] == 5

    # load the trained adapters on a fresh backend and answer through the pipeline
    backend = use_tie(load_backend(str(tiny_folder), device="cpu", quant="none"), out)
    assert backend.tie.config.trained_steps == 5 and backend.name.endswith("+tie")
    pages = documents.load(str(tmp_path / "inv0.pdf"), dpi=40, ocr=None)
    (record,) = list(pipeline.answer_questions(pages, [("1", "What is the total due?")], backend, max_new_tokens=4))
    assert record.error is None and record.model.endswith("+tie") and isinstance(record.answer, str)
    scorer = visual_scorer(backend)
    assert scorer.uses_attention
    from docvqa_cli.reading import tiles as tiles_mod

    ts = tiles_mod.split(pages[0], tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    s = scorer("What is the total due?", ts)
    assert len(s) == len(ts) and all(0 <= v <= 1 for v in s)

    # --tie without --model loads the base model the adapters name (as `docq ask --tie DIR` does)
    backend, visual = pipeline.open_backend(ModelOptions(device="cpu", tie=str(out)))
    assert backend.name == f"{tiny_folder}+tie" and visual is not None and visual.uses_attention
