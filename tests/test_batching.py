"""Batched answering (issue 8) on tiny random-weight models loaded through docq's own code.

A random model's answers are noise, but greedy decoding is deterministic: a padded batch
must give every item the same tokens as answering it alone, whatever the padding. Items
differ in question length, number of pages and number of kept tiles, so both the prompt and
the images are padded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from _tiny_models import build_idefics3
from _tiny_qwen import build_tiny_qwen
from conftest import write_invoice_pdf
from docvqa_cli import pipeline, prompts
from docvqa_cli.reading import documents, tiles
from docvqa_cli.vlm.base import PageView, _newline_stop, first_line
from docvqa_cli.vlm.load import load_backend

PROMPT = "Answer with the shortest exact text as printed in the document.\nQuestion: {question}"
NEW = 6


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return documents.load(str(write_invoice_pdf(tmp_path_factory.mktemp("doc") / "two.pdf", pages=2)))


@pytest.fixture(scope="module", params=["idefics3", "qwen2_5_vl", "qwen3_vl"])
def backend(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "model"
    if request.param == "idefics3":
        build_idefics3(folder)
    else:
        build_tiny_qwen(folder, request.param, chat_template=request.param == "qwen3_vl")
    return load_backend(str(folder), device="cpu", quant="none", say=lambda line: None)


def items_for(backend, pages):
    """Three items of different shapes: 2 tiles of page 1; 5 tiles of page 1 and 1 of page 2; 1 tile."""
    t1 = tiles.split(pages[0], tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    t2 = tiles.split(pages[1], tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    o1, o2 = tiles.overview(pages[0], max_px=backend.tile_px), tiles.overview(pages[1], max_px=backend.tile_px)
    return [
        ("What is the total?", [PageView(pages[0], o1, t1[:2])]),
        ("What is the invoice number and the date of the invoice?",
         [PageView(pages[0], o1, t1[1:6]), PageView(pages[1], o2, t2[-1:])]),
        ("Total due?", [PageView(pages[1], o2, t2[:1])]),
    ]


def tokens_alone_and_batched(backend, items, prompt=PROMPT):
    inputs = [backend._preprocess(q, v, prompt) for q, v in items]
    alone = [backend.forward(i, NEW) for i in inputs]
    batched = backend.forward_batch(inputs, NEW)
    return inputs, alone, batched


def test_batch_gives_the_same_tokens_and_answers_as_one_at_a_time(backend, pages):
    items = items_for(backend, pages)
    inputs, alone, batched = tokens_alone_and_batched(backend, items)
    assert len(batched) == len(items)
    assert any(len(a["tokens"]) > 1 for a in alone)  # something was decoded
    for a, b in zip(alone, batched):
        n = len(a["tokens"])
        assert b["tokens"][:n].tolist() == a["tokens"].tolist()
        torch.testing.assert_close(b["logprobs"][:n], a["logprobs"], atol=1e-3, rtol=1e-3)
    one = [backend.answer(q, v, PROMPT, NEW) for q, v in items]
    many = backend.answer_batch(items, PROMPT, NEW)
    assert [g.text for g in many] == [g.text for g in one]
    for g1, g2 in zip(one, many):
        assert (g1.confidence is None) == (g2.confidence is None)
        if g1.confidence is not None:
            assert g2.confidence == pytest.approx(g1.confidence, rel=1e-3)
        assert (g1.image_tokens, g1.images_encoded) == (g2.image_tokens, g2.images_encoded)


def test_pipeline_records_are_the_same_at_any_batch_size(backend, pages):
    questions = [("a", "What is the total?"), ("b", "What is the invoice number?"), ("c", "Date?"),
                 ("d", "What is the total amount due in EUR?"), ("e", "Who?")]
    runs = {}
    for size in (1, 4):
        recs = list(pipeline.answer_questions(pages, questions, backend, keep=0.5, prompt=PROMPT,
                                              max_new_tokens=NEW, batch_size=size))
        runs[size] = recs
    keys = ("question_id", "answer", "page", "boxes", "tiles_kept", "tiles_total", "error")
    for r1, r4 in zip(runs[1], runs[4]):
        assert r1.error is None
        assert {k: getattr(r1, k) for k in keys} == {k: getattr(r4, k) for k in keys}
        assert (r1.confidence is None) == (r4.confidence is None)
        if r1.confidence is not None:
            assert r4.confidence == pytest.approx(r1.confidence, abs=2e-4)


def test_answer_pairs_mixes_documents_in_one_batch(backend, pages, tmp_path):
    other = documents.load(str(write_invoice_pdf(tmp_path / "one.pdf", pages=1)))
    jobs_a = dict(tiles=pipeline.document_tiles(pages, backend), overviews={})
    jobs_b = dict(tiles=pipeline.document_tiles(other, backend), overviews={})
    jobs = [pipeline.Job("two.pdf", pages, "1", "What is the total?", **jobs_a),
            pipeline.Job("one.pdf", other, "1", "What is the total?", **jobs_b),
            pipeline.Job("two.pdf", pages, "2", "Date?", **jobs_a)]
    together = list(pipeline.answer_pairs(jobs, backend, prompt=PROMPT, max_new_tokens=NEW, batch_size=3))
    alone = [next(pipeline.answer_questions(j.pages, [(j.question_id, j.question)], backend, prompt=PROMPT,
                                            max_new_tokens=NEW, doc=j.doc)) for j in jobs]
    assert [(r.doc, r.question_id, r.answer, r.tiles_total) for r in together] == \
        [(r.doc, r.question_id, r.answer, r.tiles_total) for r in alone]


def test_static_cache_gives_the_same_tokens_as_the_dynamic_one(backend, pages):
    items = items_for(backend, pages)
    inputs = [backend._preprocess(q, v, PROMPT) for q, v in items]
    plain = backend.forward_batch(inputs, NEW)
    backend.decode = "static"
    try:
        static = backend.forward_batch(inputs, NEW)
    finally:
        backend.decode = "plain"
    assert any(len(p["tokens"]) > 1 for p in plain)
    for p, s in zip(plain, static):
        assert s["tokens"].tolist() == p["tokens"].tolist()


def test_newline_stop_stops_a_row_at_a_line_break_after_some_text(backend):
    newline, blank = backend.vocab_sets()
    tok = backend._tokenizer()
    nl = int(next(i for i in newline.tolist() if i in set(blank.tolist())))  # a bare line break
    word = tok("Total", add_special_tokens=False)["input_ids"][0]
    assert nl not in (word,) and word not in set(blank.tolist())
    stop = _newline_stop(newline, blank)
    prompt = [5, 6]
    rows = torch.tensor([prompt + [nl], prompt + [word]])  # step 1: a leading break does not stop
    assert stop(rows, None).tolist() == [False, False]
    rows = torch.cat([rows, torch.tensor([[word], [nl]])], dim=1)  # step 2: text, then a break
    assert stop(rows, None).tolist() == [False, True]
    rows = torch.cat([rows, torch.tensor([[nl], [nl]])], dim=1)
    assert stop(rows, None).tolist() == [True, True]
    # finish: the text before the break; the closing break is not part of the confidence
    text, conf = backend.finish([word, nl], [-0.5, -3.0], [], "newline")
    assert text == tok.decode([word]).strip() and conf == pytest.approx(math.exp(-0.5))
    text, _ = backend.finish([word, nl, word], [-0.5, -3.0, -1.0], [], "eos")
    assert "\n" in text


def test_prompt_newline_stop_ends_generation_at_the_first_line_break(backend, pages):
    """With ``# stop: newline`` generation itself stops at the first line break after some
    text: the tokens are those of the same prompt decoded to its end tokens, cut right after
    that break. The tiny tokenizers have one or two line-break tokens that random weights
    never pick, so a token this model does write (its third) joins the line-break ids here."""
    stop_prompt = "# stop: newline\n" + PROMPT
    newline, blank = backend.vocab_sets()
    try:
        for question, views in items_for(backend, pages):
            inputs = backend._preprocess(question, views, stop_prompt)
            assert inputs["stop"] == "newline"
            backend._vocab_sets = (newline, blank)
            free = backend.forward(dict(inputs, stop="eos"), NEW)["tokens"].tolist()
            breaks = set(newline.tolist()) | {free[2]}
            backend._vocab_sets = (torch.tensor(sorted(breaks)), blank)
            stopped = backend.forward(inputs, NEW)["tokens"].tolist()
            cut, text = len(free), False
            for i, t in enumerate(free):
                text = text or t not in set(blank.tolist())
                if text and t in breaks:
                    cut = i + 1
                    break
            assert cut < len(free) and stopped == free[:cut], (free, stopped)
    finally:
        backend._vocab_sets = (newline, blank)


def test_first_line():
    assert first_line("\n 1,157.40\nbox: [1, 2, 3, 4]") == "1,157.40"
    assert first_line("") == ""


def test_prompt_settings_are_read_and_left_out_of_the_prompt():
    template = prompts.load("default")
    s = prompts.settings(template)
    assert s.stop == "newline" and s.max_new_tokens == 24
    assert prompts.max_new_tokens(template) == 24 and prompts.max_new_tokens(template, 5) == 5
    assert "max_new_tokens" not in prompts.render(template, "Q?")
    assert prompts.settings(prompts.load("grounded")).stop == "eos"
    assert prompts.max_new_tokens("{question}") == prompts.DEFAULT_MAX_NEW_TOKENS
    with pytest.raises(Exception, match="max_new_tokens"):
        prompts.settings("# max_new_tokens: many\n{question}")


def encoder_calls(backend):
    """A list that gets the image count of each vision-encoder call (and its hook)."""
    seen = []
    hook = backend.model.model.vision_model.register_forward_hook(
        lambda m, a, kw, out: seen.append(kw["pixel_values"].shape[0]), with_kwargs=True)
    return seen, hook


def fresh_tokens(backend, inputs):
    """The batch's outputs with every image encoded from its pixels (no kept features)."""
    backend.reuse_features = False
    try:
        return backend.forward_batch(inputs, NEW)
    finally:
        backend.reuse_features = True


def same_outputs(expected, got):
    for a, b in zip(expected, got):
        assert a["tokens"].tolist() == b["tokens"].tolist()
        torch.testing.assert_close(b["logprobs"], a["logprobs"], atol=1e-4, rtol=1e-4)


def test_image_features_are_reused_with_the_same_tokens(backend, pages):
    if not getattr(backend, "reuse_features", False):
        pytest.skip(f"{backend.family}: every image is encoded with every question (see its module)")
    items = items_for(backend, pages)
    inputs = [backend._preprocess(q, v, PROMPT) for q, v in items]
    fresh = fresh_tokens(backend, inputs)
    images = sum(i["images_encoded"] for i in inputs)
    tiles_only = sum(len(v.tiles) for _, views in items for v in views)
    distinct = len({id(t) for _, views in items for v in views for t in v.tiles})
    assert images > tiles_only + 2 and tiles_only > distinct  # questions share 2 overviews and some tiles
    # As docq did before: the overviews' features kept, each question's tiles encoded.
    backend._image_features.clear()
    backend.reuse_tiles = False
    seen, hook = encoder_calls(backend)
    try:
        old = [backend.forward_batch(inputs, NEW), backend.forward_batch(inputs, NEW)]
    finally:
        hook.remove()
        backend.reuse_tiles = True
    assert seen == [tiles_only + 2, tiles_only]
    # Today: each tile and overview encoded once, shared within the batch, then kept.
    backend._image_features.clear()
    seen, hook = encoder_calls(backend)
    try:
        first = backend.forward_batch(inputs, NEW)
        again = backend.forward_batch(inputs, NEW)
    finally:
        hook.remove()
    assert seen == [distinct + 2]  # the second batch encodes nothing
    for got in old + [first, again]:
        same_outputs(fresh, got)


def test_tile_features_are_kept_per_document_and_never_cross_documents(backend, tmp_path):
    """Two documents whose tiles have the same pages and indexes: the second gets its own
    features (a key by page and index would hand it the first one's), and the first one's
    pages are freed with it (the kept features hold them weakly)."""
    import gc
    import weakref
    from pathlib import Path

    if not getattr(backend, "reuse_features", False):
        pytest.skip(f"{backend.family}: every image is encoded with every question (see its module)")

    def items(path, questions):
        page = documents.load(str(path))[0]
        cut = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
        overview = tiles.overview(page, max_px=backend.tile_px)
        return page, [(q, [PageView(page, overview, cut[a:b])]) for q, (a, b) in questions]

    backend._image_features.clear()
    page_a, items_a = items(write_invoice_pdf(tmp_path / "a.pdf"), [("Total?", (0, 3)), ("Date?", (1, 4))])
    inputs_a = [backend._preprocess(q, v, PROMPT) for q, v in items_a]
    later_a = backend._preprocess("Who pays?", [PageView(page_a, items_a[0][1][0].overview,
                                                         items_a[1][1][0].tiles[1:])], PROMPT)
    seen, hook = encoder_calls(backend)
    try:
        batch_a = backend.forward_batch(inputs_a, NEW)
        alone_a = backend.forward(later_a, NEW)  # its 2 tiles and the overview: all kept
    finally:
        hook.remove()
    assert seen == [4 + 1]
    same_outputs(fresh_tokens(backend, inputs_a) + fresh_tokens(backend, [later_a]), batch_a + [alone_a])

    sample = Path(__file__).resolve().parent.parent / "sample_docs" / "invoice.pdf"
    page_b, items_b = items(sample, [("Total?", (0, 3))])
    inputs_b = [backend._preprocess(q, v, PROMPT) for q, v in items_b]
    assert [t.key for t in items_b[0][1][0].tiles] == [t.key for t in items_a[0][1][0].tiles]
    seen, hook = encoder_calls(backend)
    try:
        got_b = backend.forward_batch(inputs_b, NEW)
    finally:
        hook.remove()
    assert seen == [3 + 1]  # nothing of document a's is taken
    same_outputs(fresh_tokens(backend, inputs_b), got_b)
    other = fresh_tokens(backend, inputs_a[:1])[0]["logprobs"]  # same question, same tile keys
    assert not torch.allclose(got_b[0]["logprobs"][: len(other)], other[: len(got_b[0]["logprobs"])], atol=1e-3)

    gone = weakref.ref(page_a)
    del page_a, items_a, inputs_a, later_a
    gc.collect()
    assert gone() is None  # the kept features do not hold document a's pages
    backend.forward_batch(inputs_b, NEW)
    assert len(backend._image_features) == 3 + 1  # document a's entries are dropped


def test_tie_batches_condition_each_item_on_its_own_question(backend, pages, tmp_path):
    from docvqa_cli.vlm.tie import use_tie
    from docvqa_cli.vlm.tie import Tie

    fresh = load_backend(backend.name, device="cpu", quant="none", say=lambda line: None)
    made = Tie.create(fresh.model, fresh.name, tokenizer=fresh._tokenizer(), every=1)
    with torch.no_grad():
        for block in made.adapters.blocks.values():
            block.gate.fill_(0.5)
    made.save(tmp_path / "tie")
    made.detach()
    items = items_for(fresh, pages)
    plain = fresh.answer_batch(items, PROMPT, NEW)
    tied = use_tie(fresh, tmp_path / "tie")
    one = [tied.answer(q, v, PROMPT, NEW) for q, v in items]
    many = tied.answer_batch(items, PROMPT, NEW)
    assert [g.text for g in many] == [g.text for g in one]
    for g1, g2 in zip(one, many):
        if g1.confidence is not None:
            assert g2.confidence == pytest.approx(g1.confidence, rel=1e-4)
    # the adapters do change what the model sees
    assert [g.confidence for g in one] != [g.confidence for g in plain]
    tied.tie.detach()


def test_ask_batch_size_and_decode_options_give_the_same_records(tmp_path, invoice_pdf, monkeypatch):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    folder = build_idefics3(tmp_path / "tiny")
    monkeypatch.setenv("NO_COLOR", "1")
    questions = ["What is the total due?", "What is the invoice number?", "Date?"]
    outs = []
    for extra in (["--batch-size", "1", "--decode", "plain"], ["--batch-size", "3", "--decode", "static"]):
        result = CliRunner().invoke(main, ["ask", str(invoice_pdf), *questions, "--model", str(folder),
                                           "--device", "cpu", "--max-new-tokens", "4", *extra])
        assert result.exit_code == 0, result.stderr
        outs.append([json.loads(line) for line in result.stdout.splitlines()])
    drop = ("seconds", "confidence")
    assert [{k: v for k, v in r.items() if k not in drop} for r in outs[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in outs[1]]
    result = CliRunner().invoke(main, ["ask", str(invoice_pdf), "Q?", "--model", str(folder), "--device", "cpu",
                                       "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.stderr


def test_default_batch_size_and_decode_policy(backend):
    from docvqa_cli.vlm import load

    assert load.default_batch_size(backend) == load.CPU_BATCH_SIZE
    assert load.resolve_decode("auto", "cpu") == "plain" and load.resolve_decode("auto", "cuda") == "static"
    assert load.resolve_decode("static", "cpu") == "static"
    text = getattr(backend.model.config, "text_config", backend.model.config)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    tokens = 13 * backend.image_tokens_per_image + 300 + 48
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 2 * tokens
    assert load.question_bytes(backend) > kv  # at least its KV cache
    assert load.question_bytes(backend, images=7) < load.question_bytes(backend, images=13)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_and_compiled_static_decode_match_one_at_a_time(tmp_path, pages):
    """On the GPU, in float32 (bf16 rounding differs with the batch shape): batch = single, and
    transformers' compiled static-cache decode = the plain one."""
    folder = build_idefics3(tmp_path / "tiny")
    gpu = load_backend(str(folder), device="cuda", quant="none", say=lambda line: None)
    gpu.model.float()
    items = items_for(gpu, pages)
    inputs = [gpu._preprocess(q, v, PROMPT) for q, v in items]
    gpu.decode = "plain"
    alone = [gpu.forward(i, NEW) for i in inputs]
    batched = gpu.forward_batch(inputs, NEW)
    gpu.decode = "static"
    static = gpu.forward_batch(inputs, NEW)
    for a, b, c in zip(alone, batched, static):
        assert b["tokens"][: len(a["tokens"])].tolist() == a["tokens"].tolist()
        assert c["tokens"].tolist() == b["tokens"].tolist()
