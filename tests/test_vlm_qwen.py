"""The Qwen2.5-VL / Qwen3-VL backend on tiny random-weight models built here (no hub).

The model's answers are noise; the tests check what reaches the vision encoder, the image
tokens in the prompt, the confidence arithmetic, and the mapping of model boxes to points.
"""

from __future__ import annotations

import math
import re

import pytest

torch = pytest.importorskip("torch")

from docvqa_cli import relevance  # noqa: E402
from docvqa_cli.reading import documents, tiles  # noqa: E402
from docvqa_cli.vlm.base import PageView  # noqa: E402
from docvqa_cli.vlm.families import families  # noqa: E402
from docvqa_cli.vlm.families.qwen import QwenBackend  # noqa: E402
from docvqa_cli.vlm.families.qwen.boxes import FoundBox, ImageRef, map_box, split_answer  # noqa: E402
from docvqa_cli.vlm.load import load_backend  # noqa: E402

from _tiny_qwen import build_tiny_qwen  # noqa: E402
from conftest import write_invoice_pdf  # noqa: E402

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
QUESTION = "What is the total amount due?"
PROMPT = "Answer with the shortest exact text as printed in the document.\nQuestion: {question}"


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request, tmp_path_factory):
    # Qwen3-VL's tiny tokenizer carries a chat template, Qwen2.5-VL's none: both prompt paths run.
    folder = build_tiny_qwen(
        tmp_path_factory.mktemp(request.param), request.param, chat_template=request.param == "qwen3_vl"
    )
    backend = load_backend(str(folder), device="cpu", quant="none", say=lambda line: None)
    assert isinstance(backend, QwenBackend)
    return backend


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    pdf = write_invoice_pdf(tmp_path_factory.mktemp("doc") / "invoice.pdf", pages=2)
    return documents.load(str(pdf), dpi=150)


def views_for(backend, pages, keep):
    views, totals = [], 0
    for page in pages:
        page_tiles = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
        totals += len(page_tiles)
        kept = relevance.select(relevance.score(QUESTION, page_tiles), keep)
        views.append(PageView(page, tiles.overview(page), [s.tile for s in kept]))
    return views, totals


class EncoderSpy:
    """Records the grid (t, h, w) of every image the vision encoder is given."""

    def __init__(self, model):
        self.grids = []
        self.tokens = 0
        visual = model.model.visual
        self.merge = visual.spatial_merge_size
        self.handle = visual.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.grids.extend(tuple(int(v) for v in row) for row in grid)

    @property
    def images(self):
        return len(self.grids)

    def close(self):
        self.handle.remove()


def test_registered_for_its_model_types():
    known = families()
    for model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        assert known[model_type] is QwenBackend


def test_tile_size_fits_the_family(backend):
    factor = {"qwen2_5_vl": 28, "qwen3_vl": 32}[backend.model_type]
    assert backend.tile_px == 16 * factor
    assert backend.tile_px % factor == 0


@pytest.mark.parametrize("keep", [0.5, 1.0])
def test_encoder_sees_only_kept_tiles_and_overviews(backend, pages, keep):
    views, total = views_for(backend, pages[:1], keep)
    kept = sum(len(v.tiles) for v in views)
    assert total > 2
    assert kept == (math.ceil(total / 2) if keep == 0.5 else total)
    spy = EncoderSpy(backend.model)
    try:
        gen = backend.answer(QUESTION, views, PROMPT, max_new_tokens=3)
    finally:
        spy.close()
    assert spy.images == kept + 1  # the kept tiles plus the page overview
    assert gen.images_encoded == kept + 1


def test_two_pages_give_two_overviews(backend, pages):
    views, total = views_for(backend, pages, 0.5)
    kept = sum(len(v.tiles) for v in views)
    spy = EncoderSpy(backend.model)
    try:
        gen = backend.answer(QUESTION, views, PROMPT, max_new_tokens=2)
    finally:
        spy.close()
    assert spy.images == kept + 2
    assert gen.images_encoded == kept + 2


def test_image_tokens_in_prompt_match_the_encoder(backend, pages):
    views, _ = views_for(backend, pages[:1], 0.5)
    inputs = backend.preprocess(QUESTION, views, PROMPT)
    ids = inputs["model_inputs"]["input_ids"][0]
    grid = inputs["model_inputs"]["image_grid_thw"]
    in_prompt = int((ids == backend.model.config.image_token_id).sum())
    expected = int(grid.prod(-1).sum()) // backend.merge**2
    assert in_prompt == expected > 0
    # What the encoder produces is what the prompt reserves (one embedding per image token).
    with torch.inference_mode():
        feats = backend.model.model.get_image_features(
            inputs["model_inputs"]["pixel_values"], grid
        )
    pooled = feats.pooler_output if hasattr(feats, "pooler_output") else feats[0]
    assert sum(p.shape[0] for p in pooled) == in_prompt
    gen = backend.postprocess(backend.forward(inputs, 2), inputs)
    assert gen.image_tokens == in_prompt


def test_prompt_labels_say_where_each_kept_tile_sits(backend, pages):
    views, _ = views_for(backend, pages[:1], 0.5)
    text = backend.preprocess(QUESTION, views, PROMPT)["prompt_text"]
    all_tiles = tiles.split(pages[0], tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    rows, cols = all_tiles[0].rows, all_tiles[0].cols
    kept = {t.index for t in views[0].tiles}
    for t in all_tiles:
        label = f"tile r{t.row + 1}c{t.col + 1} of {rows}x{cols}"
        assert (label in text) == (t.index in kept)
    assert QUESTION in text
    assert text.count("<|vision_start|>") == len(kept) + 1
    # The kept tiles in reading order, then the whole page last (what the prompts describe).
    labels = re.findall(r"Image (\d+): (tile r\d+c\d+|page 1, whole page)", text)
    assert [int(n) for n, _ in labels] == list(range(1, len(kept) + 2))
    assert labels[-1][1] == "page 1, whole page"
    assert text.index("whole page") > text.rindex("tile r")
    if backend.processor.tokenizer.chat_template:
        assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")


def test_answer_is_well_formed_and_confidence_is_the_geometric_mean(backend, pages):
    views, _ = views_for(backend, pages[:1], 0.5)
    inputs = backend.preprocess(QUESTION, views, PROMPT)
    outputs = backend.forward(inputs, 4)
    gen = backend.postprocess(outputs, inputs)
    assert isinstance(gen.text, str) and gen.text == gen.text.strip()
    ids = outputs["tokens"].tolist()
    n = next((i for i, t in enumerate(ids) if t in backend.eos_ids), len(ids))
    if n == 0:
        assert gen.confidence is None
        return
    assert 0.0 < gen.confidence <= 1.0
    # Re-score the generated tokens with one plain forward pass: same probabilities.
    mi = inputs["model_inputs"]
    full = torch.cat([mi["input_ids"], outputs["tokens"][None, :n]], dim=1)
    with torch.inference_mode():
        logits = backend.model(
            input_ids=full,
            attention_mask=torch.ones_like(full),
            pixel_values=mi["pixel_values"],
            image_grid_thw=mi["image_grid_thw"],
            mm_token_type_ids=(full == backend.model.config.image_token_id).int(),
        ).logits[0].float()
    start = mi["input_ids"].shape[1]
    logp = torch.log_softmax(logits[start - 1 : start - 1 + n], dim=-1)
    expected = math.exp(float(logp[torch.arange(n), torch.tensor(ids[:n])].mean()))
    assert gen.confidence == pytest.approx(expected, rel=1e-3)


# -- boxes the model emits (made-up outputs) ---------------------------------------------------

# A page of 600 x 800 points; an overview of 420 x 560 pixels; tile r2c1 covers x 0-300, y 400-800.
REFS = [
    ImageRef(1, 1, (0.0, 0.0, 600.0, 800.0), 420, 560, None, 300),
    ImageRef(2, 1, (0.0, 400.0, 300.0, 800.0), 448, 588, "r2c1", 336),
    ImageRef(3, 2, (0.0, 0.0, 600.0, 800.0), 420, 560, None, 300),
    ImageRef(4, 2, (300.0, 0.0, 600.0, 400.0), 448, 588, "r1c2", 336),
]


def test_qwen25_pixel_box_on_a_tile_maps_to_page_points():
    text, found = split_answer('{"answer": "1,157.40", "bbox_2d": [224, 294, 448, 588], "image": 2}')
    assert text == "1,157.40"
    box = map_box(found[0], REFS, "pixels")
    assert (box.page, box.x0, box.y0, box.x1, box.y1) == (1, 150.0, 600.0, 300.0, 800.0)


def test_qwen3_per_mille_box_on_the_overview():
    raw = '```json\n[{"bbox_2d": [500, 250, 1000, 500], "label": "total"}]\n```'
    text, found = split_answer(raw)
    box = map_box(found[0], REFS, "per-mille")
    assert (box.page, box.x0, box.y0, box.x1, box.y1) == (1, 300.0, 200.0, 600.0, 400.0)


def test_box_named_by_tile_and_page():
    _, found = split_answer('{"bbox_2d": [0, 0, 500, 500], "tile": "r1c2", "page": 2}')
    box = map_box(found[0], REFS, "per-mille")
    assert (box.page, box.x0, box.y0, box.x1, box.y1) == (2, 300.0, 0.0, 450.0, 200.0)


def test_box_in_plain_text_and_qwen2_markup():
    text, found = split_answer('The total is 42.00 {"bbox_2d": [0, 0, 210, 280]')
    assert text.startswith("The total is 42.00")
    assert found[0].coords == (0.0, 0.0, 210.0, 280.0)
    box = map_box(found[0], REFS, "pixels")
    assert (box.x1, box.y1) == (300.0, 400.0)
    text, found = split_answer("<|object_ref_start|>total<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>")
    assert text == "total"
    box = map_box(found[0], REFS, "per-mille")
    assert (box.x0, box.y0, box.x1, box.y1) == (60.0, 160.0, 180.0, 320.0)


def test_bad_boxes_are_dropped():
    assert split_answer("no boxes here")[1] == []
    _, found = split_answer('{"bbox_2d": [10, 10, 10, 50]}')  # zero width
    assert map_box(found[0], REFS, "pixels") is None
    assert map_box(FoundBox((0, 0, 10, 10), image=9), REFS, "pixels") is None  # no image 9
    assert map_box(FoundBox((0, 0, 10, 10), tile="r5c5"), REFS, "pixels") is None
    # Coordinates past the image are clamped to it.
    box = map_box(FoundBox((-50, -50, 5000, 5000), image=1), REFS, "pixels")
    assert (box.x0, box.y0, box.x1, box.y1) == (0.0, 0.0, 600.0, 800.0)


def test_grounded_prompt_box_line_is_per_mille_of_the_whole_page():
    text, found = split_answer("1,157.40\nbox: [500, 250, 1000, 500]")
    assert text == "1,157.40"
    # Even for Qwen2.5-VL (pixel boxes in JSON), this format is 0-1000 as the prompt asks.
    box = map_box(found[0], REFS, "pixels")
    assert (box.page, box.x0, box.y0, box.x1, box.y1) == (1, 300.0, 200.0, 600.0, 400.0)


# -- through the command line (needs the pipeline and `docq ask` of the same issue) -----------


def test_docq_ask_writes_well_formed_records(tmp_path, docq_env, python):
    # One family through the CLI (the default model's); both load through load_backend above.
    pytest.importorskip("docvqa_cli.pipeline")
    model_type = "qwen3_vl"
    import json
    import subprocess

    folder = build_tiny_qwen(tmp_path / model_type, model_type)
    pdf = write_invoice_pdf(tmp_path / "invoice.pdf")
    run = subprocess.run(
        [python, "-m", "docvqa_cli", "ask", str(pdf), QUESTION, "What is the invoice number?",
         "--model", str(folder), "--device", "cpu", "--keep", "0.5", "--max-new-tokens", "4"],
        capture_output=True, text=True, env=docq_env, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2
    for qid, line in enumerate(lines, 1):
        rec = json.loads(line)
        assert list(rec)[:4] == ["doc", "question_id", "question", "answer"]
        assert rec["doc"] == str(pdf) and rec["question_id"] == f"q{qid}"
        assert rec["error"] is None
        assert isinstance(rec["answer"], str)
        assert rec["confidence"] is None or 0 < rec["confidence"] <= 1
        assert rec["tiles_total"] > rec["tiles_kept"] == math.ceil(rec["tiles_total"] / 2)
        assert rec["model"] == str(folder)


@pytest.mark.cuda
def test_4bit_on_cuda_keeps_the_vision_tower_unquantised(tmp_path, pages):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (bitsandbytes 4-bit)")
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    folder = build_tiny_qwen(tmp_path / "q3", "qwen3_vl")  # text widths are multiples of 64
    backend = load_backend(str(folder), device="cuda", quant="4bit", say=lambda line: None)
    quantised = [n for n, m in backend.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert any(n.startswith("model.language_model.") for n in quantised)
    assert not any(n.startswith("model.visual") or n == "lm_head" for n in quantised)
    views, total = views_for(backend, pages[:1], 0.5)
    spy = EncoderSpy(backend.model)
    try:
        gen = backend.answer(QUESTION, views, PROMPT, max_new_tokens=3)
    finally:
        spy.close()
    assert spy.images == math.ceil(total / 2) + 1 == gen.images_encoded
