"""The GPU path's fixes that can be checked on the CPU (issue 13), on tiny random-weight
models loaded through docq's own code: Idefics3 preprocessing at the native tile size, the
static cache's length and batch buckets, the newline stop without per-step copies, the
dtype policy, the batch-size estimate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from _tiny_models import build_idefics3
from conftest import write_invoice_pdf
from docvqa_cli.reading import documents, tiles
from docvqa_cli.vlm import load
from docvqa_cli.vlm.base import PageView, _newline_stop, bucket, cache_length
from docvqa_cli.vlm.load import load_backend

CPU_HAS_NATIVE_BF16 = load.cpu_has_native_bf16  # conftest makes the tests' CPU a float32 one
PROMPT = "Answer with the shortest exact text as printed in the document.\nQuestion: {question}"
NEW = 4


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return documents.load(str(write_invoice_pdf(tmp_path_factory.mktemp("doc") / "two.pdf", pages=2)))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = build_idefics3(tmp_path_factory.mktemp("idefics3") / "model")
    return load_backend(str(folder), device="cpu", quant="none", dtype="float32", say=lambda line: None)


def view(backend, page, n_tiles):
    t = tiles.split(page, tile_px=backend.tile_px, max_tiles=backend.max_tiles)
    return PageView(page, tiles.overview(page, max_px=backend.tile_px), t[:n_tiles])


# --- Idefics3 preprocessing -------------------------------------------------------------------

def test_idefics3_preprocessing_never_scales_an_image_past_the_native_tile(backend, pages, monkeypatch):
    seen = []
    resize = backend.image_processor.resize

    def recording(image, size, *args, **kwargs):
        out = resize(image, size, *args, **kwargs)
        seen.append(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(backend.image_processor, "resize", recording)
    views = [view(backend, pages[0], 5), view(backend, pages[1], 2)]
    inputs = backend.preprocess("What is the total?", views, PROMPT)
    px = backend.tile_px
    assert seen and max(max(s) for s in seen) <= px  # before the fix: 4 x px first
    assert tuple(inputs["pixel_values"].shape[-2:]) == (px, px)
    assert inputs["pixel_values"].shape[1] == 5 + 2 + 2  # kept tiles and one overview per page


# --- static cache: length and batch buckets ------------------------------------------------

def test_buckets_round_up_by_at_most_half():
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33)] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]
    assert all(n <= bucket(n) < 1.5 * n + 1 for n in range(1, 300))
    assert cache_length(10, 16) == 256 and cache_length(600, 48) == 768


def _cache_lengths_and_rows(model):
    """A hook recording, per forward, the static cache's length and the batch rows."""
    seen = []

    def hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ids = kwargs.get("input_ids")
        layers = getattr(cache, "layers", None) or []
        length = getattr(layers[0], "max_cache_len", None) if layers else None
        seen.append((length, None if ids is None else ids.shape[0]))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_static_cache_shrinks_after_a_long_then_a_short_document(backend, pages):
    long_views = [view(backend, pages[0], 12), view(backend, pages[1], 12)]
    short_views = [view(backend, pages[0], 1)]
    backend.decode = "static"
    seen, handle = _cache_lengths_and_rows(backend.model)
    try:
        long_in = backend._preprocess("What is the total?", long_views, PROMPT)
        backend.forward(long_in, NEW)
        long_len = seen[0][0]
        seen.clear()
        short_in = backend._preprocess("What is the total?", short_views, PROMPT)
        short_tokens = backend.forward(short_in, NEW)["tokens"]
        short_len = seen[0][0]
    finally:
        handle.remove()
        backend.decode = "plain"
    if long_len is None:
        pytest.skip("this transformers' static cache does not say its length")
    prompt = -(-short_in["input_ids"].shape[1] // backend.pad_multiple()) * backend.pad_multiple()
    assert long_len >= long_in["input_ids"].shape[1] + NEW
    assert short_len == cache_length(prompt, NEW) < long_len  # before the fix: the long length again
    assert short_tokens.tolist() == backend.forward(short_in, NEW)["tokens"].tolist()  # = the dynamic cache


def test_a_batch_is_filled_up_to_its_bucket_and_the_copies_dropped(backend, pages):
    items = [(q, [view(backend, pages[i % 2], 1 + i)]) for i, q in
             enumerate(["Total?", "What is the invoice number?", "Date?", "Who is the seller?", "VAT?"])]
    plain = backend.answer_batch(items, PROMPT, NEW)
    backend.decode, backend.pad_batches = "static", True
    seen, handle = _cache_lengths_and_rows(backend.model)
    try:
        padded = backend.answer_batch(items, PROMPT, NEW)
    finally:
        handle.remove()
        backend.decode, backend.pad_batches = "plain", None
    assert {rows for _, rows in seen} == {bucket(5)} == {6}
    assert [g.text for g in padded] == [g.text for g in plain]
    assert [g.images_encoded for g in padded] == [g.images_encoded for g in plain]


def test_batches_are_padded_only_where_the_decode_compiles(backend):
    assert backend.pad_batches is None and backend.decode == "plain"
    assert not backend.pads_batches()
    backend.decode = "static"
    try:
        assert not backend.pads_batches()  # the CPU does not compile: padding would only cost
    finally:
        backend.decode = "plain"


# --- newline stop -----------------------------------------------------------------------------

class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_newline_stop_copies_its_tables_to_the_device_once():
    """On a device other than the tables' (here 'meta'), only the first step copies them."""
    stop = _newline_stop(torch.tensor([5, 7]), torch.tensor([1, 5]))
    ids = torch.zeros((2, 3), dtype=torch.long, device="meta")
    scores = torch.zeros((2, 10), device="meta")
    first, later = _Ops(), _Ops()
    with first:
        stop(ids, scores)
    with later:
        for _ in range(3):
            stop(ids, scores)
    copies = [n for n in first.names if "_to_copy" in n or "copy_" in n]
    assert copies  # the first step moves the tables
    assert not [n for n in later.names if "_to_copy" in n or "copy_" in n or "isin" in n]


def test_newline_stop_tables_give_the_same_stops():
    newline, blank = torch.tensor([3, 4]), torch.tensor([2, 3])  # 3: a bare line break, 4: "text\n"
    stop = _newline_stop(newline, blank)
    steps = [[2, 9], [3, 4], [9, 3], [3, 2]]  # rows: (blank, \n after nothing, text, \n) ; (text, text\n)
    out = [stop(torch.tensor([[a, b]]).T, torch.zeros(2, 12)).tolist() for a, b in steps]
    assert out == [[False, False], [False, True], [False, True], [True, False]]
    assert stop(torch.tensor([[99], [3]]), None).tolist() == [False, True]  # an id past the tables


# --- dtype ------------------------------------------------------------------------------------

def test_dtype_policy_on_cuda_prefers_bf16_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert load.resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4, an RTX 2080
    assert load.resolve_dtype("auto", "cuda") == torch.float16
    assert load.resolve_dtype("float32", "cuda") == torch.float32


def test_dtype_policy_on_the_cpu_follows_native_bf16(monkeypatch):
    amx = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
    assert CPU_HAS_NATIVE_BF16(amx) and CPU_HAS_NATIVE_BF16(arm)
    assert not CPU_HAS_NATIVE_BF16(avx2) and not CPU_HAS_NATIVE_BF16("")
    assert load.resolve_dtype("auto", "cpu") == torch.float32  # conftest: every test CPU is a float32 one
    monkeypatch.setattr(load, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert load.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(load, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert load.resolve_dtype("auto", "cpu") == torch.float32
    assert load.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(load.UsageError, match="--dtype"):
        load.resolve_dtype("int8", "cpu")


def test_loading_with_a_dtype_gives_weights_of_that_dtype_and_answers(tmp_path, pages):
    folder = build_idefics3(tmp_path / "tiny")
    bf16 = load_backend(str(folder), device="cpu", quant="none", dtype="bfloat16", say=lambda line: None)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    gen = bf16.answer("Total?", [view(bf16, pages[0], 2)], PROMPT, NEW)
    assert gen.images_encoded == 3 and (gen.confidence is None or 0 < gen.confidence <= 1)


def test_the_bnb_compute_dtype_follows_the_model_dtype():
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("accelerate")
    cfg = load.quantization_config("4bit", ("model.vision_model",), torch.float16)
    assert cfg.bnb_4bit_compute_dtype == torch.float16


# --- --quant int4 -----------------------------------------------------------------------------

def test_int4_on_the_cpu_is_an_environment_problem():
    with pytest.raises(load.EnvironmentProblem, match="int4 needs a CUDA GPU"):
        load.resolve_quant("int4", "cpu")
    assert load.resolve_quant("int4", "cuda") == "int4" and load.resolve_quant("auto", "cuda") == "4bit"


def test_int4_without_torchao_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)  # an import of it fails, installed or not
    with pytest.raises(load.EnvironmentProblem, match="pip install torchao"):
        load.quantization_config("int4", ("model.visual",), torch.bfloat16)


# --- batch-size estimate ----------------------------------------------------------------------

def test_question_bytes_counts_the_familys_own_patches_per_image_token(backend):
    """Idefics3: each image token stands for scale_factor^2 vision patches (9 for SmolVLM)."""
    config = backend.model.config
    assert backend.patches_per_image_token() == config.scale_factor**2
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    assert backend.patches_per_image_token() * backend.image_tokens_per_image == patches
    more = load.question_bytes(backend)
    backend.patches_per_image_token = lambda: 1
    try:
        assert load.question_bytes(backend) < more
    finally:
        del backend.patches_per_image_token


def test_batch_size_on_a_large_card_goes_past_16(backend, monkeypatch):
    monkeypatch.setattr(backend, "device", torch.device("cuda"))
    per = load.question_bytes(backend, 48)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(per * 200 / load.GPU_MEMORY_SHARE), 0))
    assert load.default_batch_size(backend) == load.MAX_BATCH_SIZE > 16
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(per * 5 / load.GPU_MEMORY_SHARE) + 1, 0))
    assert load.default_batch_size(backend) == 5


# --- out of memory: retry after freeing, with fewer tiles ----------------------------------

QUESTIONS = [("a", "What is the total?"), ("b", "What is the invoice number?"), ("c", "Date?")]


def test_a_failed_batch_is_freed_before_its_questions_are_retried(backend, pages, monkeypatch):
    """An out-of-memory batch: its tensors are gone and the CUDA cache emptied before the
    one-at-a-time retries start (before the fix they ran inside ``except``, the batch alive)."""
    import weakref

    from docvqa_cli import pipeline

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    held, alive_at_retry = [], []
    forward_batch, answer = backend.forward_batch, backend.answer

    def failing_batch(inputs, max_new_tokens):
        if len(inputs) > 1:
            activations = torch.ones(1024, 1024)  # what a real forward holds when it runs out
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward_batch(inputs, max_new_tokens)

    def single(*args, **kwargs):
        alive_at_retry.append([r() is not None for r in held])
        alive_at_retry[-1].append(bool(emptied))
        return answer(*args, **kwargs)

    monkeypatch.setattr(backend, "forward_batch", failing_batch)
    monkeypatch.setattr(backend, "answer", single)
    records = list(pipeline.answer_questions(pages, QUESTIONS, backend, keep=0.5, prompt=PROMPT,
                                             max_new_tokens=NEW, batch_size=3))
    assert [r.error for r in records] == [None, None, None]
    assert held and alive_at_retry and alive_at_retry[0] == [False, True]  # freed, then emptied
    monkeypatch.undo()
    alone = list(pipeline.answer_questions(pages, QUESTIONS, backend, keep=0.5, prompt=PROMPT,
                                           max_new_tokens=NEW, batch_size=1))
    assert [(r.answer, r.tiles_kept) for r in records] == [(r.answer, r.tiles_kept) for r in alone]


def _oom_past(backend, monkeypatch, images: int):
    """Make every forward with more than ``images`` images run out of memory."""
    forward_batch = backend.forward_batch

    def limited(inputs, max_new_tokens):
        if sum(i["images_encoded"] for i in inputs) > images:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return forward_batch(inputs, max_new_tokens)

    monkeypatch.setattr(backend, "forward_batch", limited)


def test_a_question_out_of_memory_is_retried_with_fewer_tiles(backend, pages, monkeypatch):
    from docvqa_cli import pipeline

    total = len(pipeline.document_tiles(pages, backend))
    _oom_past(backend, monkeypatch, images=total // 2 + 2)  # keep 1.0 fails, keep 0.5 fits
    (rec,) = pipeline.answer_questions(pages, QUESTIONS[:1], backend, keep=1.0, prompt=PROMPT, max_new_tokens=NEW)
    assert rec.error is None and rec.tiles_kept == total // 2 and rec.answer is not None


def test_out_of_memory_even_with_fewer_tiles_is_an_error_record(backend, pages, monkeypatch):
    from docvqa_cli import pipeline

    _oom_past(backend, monkeypatch, images=0)
    recs = list(pipeline.answer_questions(pages, QUESTIONS[:2], backend, keep=1.0, prompt=PROMPT,
                                          max_new_tokens=NEW, batch_size=2))
    assert all(r.error.startswith("out of memory, also with fewer tiles (--keep 0.25)") for r in recs)
    assert all("OutOfMemoryError" in r.error and not r.answer for r in recs)


def test_docq_ask_retries_with_fewer_tiles(tmp_path, invoice_pdf, monkeypatch):
    """``docq ask`` goes through the same retry (the batch command did; ask did not)."""
    import json

    from click.testing import CliRunner

    from docvqa_cli import cli, pipeline

    folder = build_idefics3(tmp_path / "tiny")
    opened = pipeline.open_backend

    def open_limited(*args, **kwargs):
        loaded, visual = opened(*args, **kwargs)
        total = len(pipeline.document_tiles(documents.load(str(invoice_pdf)), loaded))
        _oom_past(loaded, monkeypatch, images=total // 2 + 1)
        return loaded, visual

    monkeypatch.setattr(pipeline, "open_backend", open_limited)
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(cli.main, ["ask", str(invoice_pdf), "Total?", "--model", str(folder),
                                           "--device", "cpu", "--keep", "1", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.stderr
    (rec,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert rec["error"] is None and rec["tiles_kept"] * 2 == rec["tiles_total"]


# --- Qwen: images preprocessed together, pixels cast before the copy ---------------------------

@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from _tiny_qwen import build_tiny_qwen

    folder = build_tiny_qwen(tmp_path_factory.mktemp("qwen3") / "model", "qwen3_vl", chat_template=True)
    return load_backend(str(folder), device="cpu", quant="none", dtype="bfloat16", say=lambda line: None)


def test_qwen_preprocesses_a_questions_images_in_one_call_per_budget(qwen, pages, monkeypatch):
    processor = qwen.processor.image_processor
    calls = []
    original = type(processor).__call__

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs.get("images") or args[0]))
        return original(self, *args, **kwargs)

    views = [view(qwen, pages[0], 4), view(qwen, pages[1], 2)]
    monkeypatch.setattr(type(processor), "__call__", counting)
    inputs = qwen.preprocess("What is the total?", views, PROMPT)
    assert calls == [6, 2]  # before: 8 calls of one image
    monkeypatch.undo()
    one = [processor(images=[t.image.convert("RGB")], size=qwen._budget(int(1.5 * qwen.tile_px**2)),
                     return_tensors="pt") for t in views[0].tiles + views[1].tiles]
    model_inputs = inputs["model_inputs"]
    tile_patches = sum(int(o["pixel_values"].shape[0]) for o in one)
    torch.testing.assert_close(model_inputs["pixel_values"][: int(one[0]["pixel_values"].shape[0])],
                               one[0]["pixel_values"])
    assert int(model_inputs["pixel_values"].shape[0]) > tile_patches
    assert [r.tokens for r in inputs["images"]][:6] == [int(o["image_grid_thw"][0].prod()) // 4 for o in one]


def test_pixels_reach_the_model_in_its_dtype(qwen, pages, monkeypatch):
    """What docq hands to ``generate`` (what crosses to the GPU there) is already in the vision
    tower's dtype: half the bytes of float32 in bf16."""
    seen = []
    generate = qwen.model.generate

    def recording(**kwargs):
        seen.append(kwargs["pixel_values"].dtype)
        return generate(**kwargs)

    monkeypatch.setattr(qwen.model, "generate", recording)
    gen = qwen.answer("Total?", [view(qwen, pages[0], 2)], PROMPT, NEW)
    assert seen == [torch.bfloat16]  # before: float32, cast inside the model
    assert gen.images_encoded == 3


def test_dtype_and_int4_options_reach_the_model_options():
    from click.testing import CliRunner

    from docvqa_cli import options
    from docvqa_cli.cli.common import model_options

    @model_options()
    def probe(model):
        return model

    import click

    command = click.command()(probe)
    r = CliRunner().invoke(command, ["--dtype", "float16", "--quant", "int4"], standalone_mode=False)
    assert r.exception is None and r.return_value == options.ModelOptions(dtype="float16", quant="int4")
    r = CliRunner().invoke(command, ["--dtype", "int8"])
    assert r.exit_code == 2 and "--dtype" in r.output


def test_docq_ask_quant_int4_on_the_cpu_exits_3_saying_why(tmp_path, invoice_pdf, monkeypatch):
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    folder = build_idefics3(tmp_path / "tiny")
    monkeypatch.setenv("NO_COLOR", "1")
    r = CliRunner().invoke(main, ["ask", str(invoice_pdf), "Total?", "--model", str(folder), "--device", "cpu",
                                  "--quant", "int4"])
    assert r.exit_code == 3 and "int4 needs a CUDA GPU" in r.stderr


def test_docq_ask_dtype_bfloat16_on_the_cpu_answers(tmp_path, invoice_pdf, monkeypatch):
    import json

    from click.testing import CliRunner

    from docvqa_cli import pipeline
    from docvqa_cli.cli import main

    folder = build_idefics3(tmp_path / "tiny")
    dtypes = []
    opened = pipeline.open_backend

    def recording(*args, **kwargs):
        loaded, visual = opened(*args, **kwargs)
        dtypes.append(next(loaded.model.parameters()).dtype)
        return loaded, visual

    monkeypatch.setattr(pipeline, "open_backend", recording)
    monkeypatch.setenv("NO_COLOR", "1")
    r = CliRunner().invoke(main, ["ask", str(invoice_pdf), "Total?", "--model", str(folder), "--device", "cpu",
                                  "--dtype", "bfloat16", "--max-new-tokens", "3"])
    assert r.exit_code == 0, r.stderr
    assert dtypes == [torch.bfloat16] and json.loads(r.stdout)["error"] is None


def test_a_one_shot_ask_does_not_compile(tmp_path, invoice_pdf, monkeypatch):
    """--decode auto: static (compiled) on CUDA for long runs, plain for a few questions."""
    assert load.resolve_decode("auto", "cuda") == "static"
    assert load.resolve_decode("auto", "cuda", questions=1) == "plain"
    assert load.resolve_decode("auto", "cuda:1", questions=load.STATIC_MIN_QUESTIONS) == "static"
    assert load.resolve_decode("static", "cuda", questions=1) == "static"
    assert load.resolve_decode("auto", "cpu", questions=1000) == "plain"
    from click.testing import CliRunner

    from docvqa_cli import pipeline
    from docvqa_cli.cli import main

    seen = []
    opened = pipeline.open_backend

    def recording(*args, **kwargs):
        seen.append(kwargs.get("questions"))
        return opened(*args, **kwargs)

    monkeypatch.setattr(pipeline, "open_backend", recording)
    folder = build_idefics3(tmp_path / "tiny")
    r = CliRunner().invoke(main, ["ask", str(invoice_pdf), "Total?", "Date?", "--model", str(folder),
                                  "--device", "cpu", "--max-new-tokens", "2"])
    assert r.exit_code == 0, r.stderr
    assert seen == [2]


# --- the batch engine's retry ------------------------------------------------------------------

def test_the_batch_engines_retry_runs_after_the_failed_call_is_freed(pages):
    """``answer_document``: a question whose answer step raised out of memory is retried with
    fewer tiles once that call's exception and tensors are gone (before: inside ``except``)."""
    import weakref

    from docvqa_cli import records
    from docvqa_cli.batch import Question, answer_document

    held, alive, keeps = [], [], []

    def answer(pages_, questions, keep):
        keeps.append(keep)
        alive.append([r() is not None for r in held])
        if keep > 0.3:
            activations = torch.ones(512, 512)
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        for qid, text in questions:
            yield records.Answer(doc="d.pdf", question_id=qid, question=text, answer="x", tiles_kept=1)

    step = SimpleNamespace(answer=answer, model_name=None, batch_size=1)
    (rec,) = answer_document("d.pdf", pages, None, [Question("q1", "Total?")], step, keep=1.0)
    assert rec.error is None and keeps == [1.0, 0.5, 0.25]
    assert alive == [[], [False], [False, False]]  # each retry found the failed call's tensors freed


def test_a_question_the_pipeline_already_retried_is_not_retried_again(pages):
    from docvqa_cli import records
    from docvqa_cli.batch import Question, answer_document
    from docvqa_cli.errors import ErrorKind, oom_gave_up

    keeps = []

    def answer(pages_, questions, keep):  # the pipeline's record after its own retries
        keeps.append(keep)
        for qid, text in questions:
            yield records.Answer(doc="d.pdf", question_id=qid, question=text,
                                 error=oom_gave_up("OutOfMemoryError: CUDA out of memory", keep),
                                 failure=ErrorKind.out_of_memory)

    step = SimpleNamespace(answer=answer, model_name=None, batch_size=1)
    (rec,) = answer_document("d.pdf", pages, None, [Question("q1", "Total?")], step, keep=1.0)
    assert keeps == [1.0] and rec.error.startswith("d.pdf: out of memory, also with fewer tiles (--keep 0.25)")
