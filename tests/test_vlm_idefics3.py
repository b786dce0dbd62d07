"""The Idefics3 / SmolVLM backend on a tiny random-weight model loaded through docq's own code.

The model's answers are noise; these tests check what reaches the vision encoder, the
image tokens in the prompt, the tile markers, and the confidence arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch

from _tiny_models import build_idefics3
from conftest import write_invoice_pdf
from docvqa_cli import pipeline, prompts
from docvqa_cli.reading import documents, tiles
from docvqa_cli.vlm.base import PageView, confidence_from_logprobs
from docvqa_cli.vlm.families import idefics3
from docvqa_cli.vlm.load import load_backend


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = build_idefics3(tmp_path_factory.mktemp("tiny") / "idefics3")
    return load_backend(str(folder), device="cpu", quant="auto", say=lambda line: None)


@pytest.fixture(scope="module")
def one_page(tmp_path_factory):
    return documents.load(str(write_invoice_pdf(tmp_path_factory.mktemp("doc") / "invoice.pdf")))


class Spy:
    """Records what the vision encoder receives and the views given to the backend."""

    def __init__(self, backend):
        self.backend = backend
        self.encoder_inputs = []
        self.connector_outputs = []
        self.calls = []  # (views, inputs) per question

    def __enter__(self):
        model = self.backend.model.model
        self.hooks = [
            model.vision_model.register_forward_hook(self._encoder, with_kwargs=True),
            model.connector.register_forward_hook(lambda m, a, out: self.connector_outputs.append(out)),
        ]
        self.original = self.backend.preprocess

        def preprocess(question, views, prompt):
            inputs = self.original(question, views, prompt)
            self.calls.append((views, inputs))
            return inputs

        self.backend.preprocess = preprocess
        return self

    def _encoder(self, module, args, kwargs, out):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        self.encoder_inputs.append(pixels.detach().clone())

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        self.backend.preprocess = self.original


def ask(backend, pages, keep, question="What is the total due?"):
    with Spy(backend) as spy:
        records = list(pipeline.answer_questions(pages, [("q", question)], backend, keep=keep,
                                                 prompt=prompts.load("default"), max_new_tokens=4))
    assert len(records) == 1 and records[0].error is None, records
    return records[0], spy


def test_native_tile_size_comes_from_the_processor(backend):
    assert backend.tile_px == 64  # the tiny model's vision image_size
    assert backend.image_seq_len == (64 // 16) ** 2 // 4


@pytest.mark.parametrize("keep", [0.5, 1.0])
def test_encoder_receives_exactly_the_kept_tiles_and_the_overview(backend, one_page, keep):
    record, spy = ask(backend, one_page, keep)
    total = record.tiles_total
    assert total > 1
    assert record.tiles_kept == math.ceil(keep * total)
    (views, inputs), = spy.calls
    (encoded,) = spy.encoder_inputs
    assert encoded.shape[0] == record.tiles_kept + 1  # kept tiles + one overview
    # ...and they are those tiles: the same pixels as the kept tiles' crops, then the overview.
    shown = [t.image for t in views[0].tiles] + [views[0].overview]
    expected = backend.image_processor(images=[shown], do_image_splitting=False,
                                       size={"longest_edge": backend.tile_px}, return_tensors="pt")
    assert torch.allclose(encoded.float(), expected["pixel_values"][0].float(), atol=1e-5)
    assert len(views[0].tiles) == record.tiles_kept


def test_half_the_tiles_at_keep_half(backend, one_page):
    half, spy_half = ask(backend, one_page, 0.5)
    full, spy_full = ask(backend, one_page, 1.0)
    assert spy_full.encoder_inputs[0].shape[0] == full.tiles_total + 1
    assert spy_half.encoder_inputs[0].shape[0] - 1 == math.ceil((spy_full.encoder_inputs[0].shape[0] - 1) / 2)


def test_image_tokens_in_the_prompt_match_the_encoder_output(backend, one_page):
    record, spy = ask(backend, one_page, 0.5)
    (views, inputs), = spy.calls
    features = spy.connector_outputs[0]  # (images, tokens per image, hidden)
    in_prompt = int((inputs["input_ids"] == backend.image_token_id).sum())
    assert in_prompt == features.shape[0] * features.shape[1]
    assert inputs["image_tokens"] == in_prompt
    assert inputs["images_encoded"] == record.tiles_kept + 1


def test_prompt_marks_only_the_kept_tiles(backend, one_page):
    record, spy = ask(backend, one_page, 0.5)
    (views, inputs), = spy.calls
    tokens = backend.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    markers = [t for t in tokens if t.startswith("<row_")]
    expected = [f"<row_{t.row + 1}_col_{t.col + 1}>" for t in views[0].tiles]
    assert markers == expected
    assert tokens.count("<global-img>") == 1


def test_two_pages_show_one_overview_per_page_with_kept_tiles(backend, tmp_path):
    pages = documents.load(str(write_invoice_pdf(tmp_path / "two.pdf", pages=2)))
    record, spy = ask(backend, pages, 1.0)
    (views, inputs), = spy.calls
    assert [v.page.number for v in views] == [1, 2]
    assert spy.encoder_inputs[0].shape[0] == record.tiles_total + 2
    tokens = backend.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens.count("<global-img>") == 2


def test_confidence_is_the_geometric_mean_of_token_probabilities():
    logprobs = [math.log(0.5), math.log(0.8)]
    assert confidence_from_logprobs(logprobs) == pytest.approx(math.sqrt(0.5 * 0.8))
    assert confidence_from_logprobs([]) is None


def test_model_confidence_is_the_probability_of_its_answer(backend, one_page):
    """The confidence is the geometric mean of the answer tokens' probabilities, as one
    teacher-forced forward over the prompt and the answer computes them independently."""
    page = one_page[0]
    views = [PageView(page, tiles.overview(page, max_px=backend.tile_px),
                      tiles.split(page, tile_px=backend.tile_px)[:2])]
    inputs = backend._preprocess("What is the total due?", views, "{question}")
    outputs = backend.forward(inputs, 4)
    generation = backend.postprocess(outputs, inputs)
    tokens = outputs["tokens"].tolist()
    n = next((i for i, t in enumerate(tokens) if t in backend.eos_ids), len(tokens))
    assert n >= 1 and generation.confidence is not None
    ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:n]])], dim=1)
    with torch.no_grad():
        logits = backend.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                               pixel_values=inputs["pixel_values"],
                               pixel_attention_mask=inputs["pixel_attention_mask"]).logits[0].float()
    start = inputs["input_ids"].shape[1] - 1  # the logits that chose the first answer token
    logp = torch.log_softmax(logits[start:start + n], dim=-1).gather(1, torch.tensor(tokens[:n])[:, None])
    expected = math.exp(float(logp.mean()))
    assert 0.0 < generation.confidence <= 1.0
    assert generation.confidence == pytest.approx(expected, rel=1e-3)
    record, _ = ask(backend, one_page, 0.5)  # and a record carries one, rounded
    assert record.confidence is not None and 0.0 < record.confidence <= 1.0


def test_large_grids_map_onto_the_six_markers():
    assert [idefics3._marker_index(i, 4) for i in range(4)] == [1, 2, 3, 4]
    mapped = [idefics3._marker_index(i, 12) for i in range(12)]
    assert mapped == sorted(mapped) and mapped[0] == 1 and mapped[-1] == 6
