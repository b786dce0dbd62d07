"""4-bit loading through docq's own code, on CUDA only (bitsandbytes' CPU 4-bit path needs
layer widths in multiples of 64). Skips cleanly without a GPU."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_4bit_keeps_vision_and_connector_in_bf16_and_answers(tmp_path, invoice_pdf):
    bnb = pytest.importorskip("bitsandbytes")
    from _tiny_models import build_idefics3
    from docvqa_cli import documents, pipeline
    from docvqa_cli.vlm.load import load_backend

    folder = build_idefics3(tmp_path / "tiny")
    backend = load_backend(str(folder), device="cuda", quant="4bit", say=lambda line: None)
    model = backend.model
    text_linears = [m for n, m in model.named_modules() if n.startswith("model.text_model") and
                    isinstance(m, torch.nn.Linear)]
    assert text_linears and all(isinstance(m, bnb.nn.Linear4bit) for m in text_linears)
    for prefix in ("model.vision_model", "model.connector"):
        mods = [m for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)]
        assert mods and not any(isinstance(m, bnb.nn.Linear4bit) for m in mods)
        assert all(m.weight.dtype == torch.bfloat16 for m in mods)
    pages = documents.load(str(invoice_pdf))
    (rec,) = pipeline.answer_questions(pages, [("1", "Total?")], backend, keep=0.5, max_new_tokens=4)
    assert rec.error is None and rec.tiles_kept * 2 >= rec.tiles_total
