"""4-bit loading through docq's own code, on CUDA only (bitsandbytes' CPU 4-bit path needs
layer widths in multiples of 64). Skips cleanly without a GPU."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_4bit_keeps_vision_and_connector_in_bf16_and_answers(tmp_path, invoice_pdf):
    bnb = pytest.importorskip("bitsandbytes")
    from _tiny_models import build_idefics3
    from docvqa_cli import pipeline
    from docvqa_cli.reading import documents
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


def test_int4_quantises_the_language_model_keeps_vision_and_answers_compiled(tmp_path, invoice_pdf):
    """--quant int4 (torchao): the text model's Linear weights become int4 tensors, the vision
    tower and connector stay bf16, transformers agrees to compile the decode step, and a batch
    answers through both decodes (bf16 rounding differs between compiled and eager kernels, so
    the random model's tokens are not compared)."""
    pytest.importorskip("torchao")
    from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    from _tiny_models import (IDEFICS3_SPECIAL, SMOLVLM_CHAT_TEMPLATE, idefics3_config, save_model_folder,
                              train_tokenizer)
    from docvqa_cli import pipeline
    from docvqa_cli.reading import documents
    from docvqa_cli.vlm.load import load_backend

    tok = train_tokenizer(IDEFICS3_SPECIAL, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                          pad_token="<|endoftext|>", chat_template=SMOLVLM_CHAT_TEMPLATE)
    ids = {"image": tok.convert_tokens_to_ids("<image>"), "pad": tok.pad_token_id, "eos": tok.eos_token_id,
           "bos": tok.bos_token_id}
    # int4 groups of 128 inputs: text widths in multiples of 128
    config = idefics3_config(len(tok), ids, text_hidden=256, vision_hidden=64)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    processor = Idefics3Processor(Idefics3ImageProcessorPil(size={"longest_edge": 256}, max_image_size={"longest_edge": 64}),
                                  tok, image_seq_len=4, chat_template=SMOLVLM_CHAT_TEMPLATE)
    folder = save_model_folder(tmp_path / "tiny-int4", model, processor)

    backend = load_backend(str(folder), device="cuda", quant="int4", say=lambda line: None)
    net = backend.model
    assert net.hf_quantizer.is_compileable  # unlike bitsandbytes' 4 bit
    text = [m for n, m in net.named_modules() if n.startswith("model.text_model") and isinstance(m, torch.nn.Linear)]
    assert text and all("Int4" in type(m.weight).__name__ for m in text)
    for prefix in ("model.vision_model", "model.connector"):
        mods = [m for n, m in net.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)]
        assert mods and all(m.weight.dtype == torch.bfloat16 and "Int4" not in type(m.weight).__name__ for m in mods)
    pages = documents.load(str(invoice_pdf))
    questions = [("1", "Total?"), ("2", "Date?"), ("3", "Invoice number?")]
    backend.decode = "plain"
    plain = list(pipeline.answer_questions(pages, questions, backend, keep=0.5, max_new_tokens=4, batch_size=3))
    backend.decode = "static"
    static = list(pipeline.answer_questions(pages, questions, backend, keep=0.5, max_new_tokens=4, batch_size=3))
    assert all(r.error is None for r in plain + static)
    assert [r.tiles_kept for r in static] == [r.tiles_kept for r in plain]
