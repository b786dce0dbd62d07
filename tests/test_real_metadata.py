"""docq on the default checkpoints' own files: tokenizer, processor, chat template, configs.

For SmolVLM-256M-Instruct, Qwen3-VL-4B-Instruct and Qwen2.5-VL-3B-Instruct, a model is built
from the real ``config.json`` with fewer and narrower layers (``_real_models.build``: the
vocabulary, special-token ids, image, patch and merge sizes unchanged), its random weights
saved as safetensors next to the real metadata files, once per test session. Every check
runs ``docq`` (Click's runner, in this process) on ``sample_docs/invoice.pdf`` and watches
what reaches ``model.generate`` (``Backend.generate_rows`` wrapped, not replaced): the
prompt is the one the checkpoint's chat template renders, the image tokens are the ones
its processor produces, batched equals one at a time, decoding ends at the template's
end-of-turn token, ``--prompt grounded`` reads the family's own box format, and ``docq
tune`` + ``--tie`` run. The weights are random, so the answers are noise unless a test
steers the logits (``sequence_bias``: a model that writes a given text, then ends its turn).

Skipped when neither ``../shared/models`` nor ``$DOCQ_REAL_MODELS`` holds the metadata.
"""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")

from _real_models import NAMES, build, models_dir, skip_reason  # noqa: E402
from conftest import SAMPLES  # noqa: E402

from docvqa_cli.vlm.base import Backend  # noqa: E402

pytestmark = pytest.mark.skipif(models_dir() is None, reason=skip_reason())

INVOICE = SAMPLES / "invoice.pdf"
TOTAL = "1,629.72"  # printed on the invoice (sample_docs/README.md)
QUESTIONS = ["What is the total amount due?", "What is the invoice number?"]


@pytest.fixture(scope="session", params=NAMES)
def real(request, tmp_path_factory):
    """(name, folder) of a small random-weight model built from ``name``'s real metadata."""
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param.split("-")[0]) / "model")


_ORIGINAL_GENERATE = Backend.generate_rows


class Spy:
    """Records what each ``generate_rows`` call got and returned; ``bias`` steers the logits."""

    def __init__(self, monkeypatch, bias=None):
        self.calls = []
        self.generations = []
        self.generate_kwargs = []
        self.backend = None
        self.bias = bias
        real_generate = _ORIGINAL_GENERATE
        patched = set()

        def watch_postprocess(cls):
            real_post = getattr(cls.postprocess, "original", cls.postprocess)

            def postprocess(backend, outputs, inputs):
                generation = real_post(backend, outputs, inputs)
                self.generations.append(generation)
                return generation

            postprocess.original = real_post
            monkeypatch.setattr(cls, "postprocess", postprocess)

        def generate_rows(backend, tensors, max_new_tokens, stop, eos_ids, pad_id):
            self.backend = backend
            if type(backend) not in patched:
                patched.add(type(backend))
                watch_postprocess(type(backend))
            if self.bias is not None:
                backend.model.generation_config.sequence_bias = self.bias(backend, tensors)
            model = backend.model
            if "generate" not in vars(model):  # see the keyword arguments docq decodes with
                real_model_generate = model.generate

                def generate(*args, **kwargs):
                    self.generate_kwargs.append({k: v for k, v in kwargs.items() if k not in tensors})
                    return real_model_generate(*args, **kwargs)

                model.generate = generate
            rows = real_generate(backend, tensors, max_new_tokens, stop, eos_ids, pad_id)
            self.calls.append({"tensors": {k: v.cpu() if hasattr(v, "cpu") else v for k, v in tensors.items()},
                               "rows": rows, "eos_ids": list(eos_ids)})
            return rows

        monkeypatch.setattr(Backend, "generate_rows", generate_rows)

    def prompts(self) -> list:
        """Each row's prompt ids (padding removed), in call order."""
        out = []
        for call in self.calls:
            t = call["tensors"]
            for ids, mask in zip(t["input_ids"], t["attention_mask"]):
                out.append(ids[mask.bool()])
        return out


def docq(*args, env=None):
    """``docq ARGS`` in this process; (exit code, records, stderr)."""
    from click.testing import CliRunner

    from docvqa_cli.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], env={"NO_COLOR": "1", "HF_HUB_OFFLINE": "1",
                                                                    **(env or {})})
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, records, result.stderr


def ask(folder, *args, questions=QUESTIONS[:1]):
    return docq("ask", INVOICE, *questions, "--model", folder, "--device", "cpu", "--max-new-tokens", "3", *args)


def tokenizer_of(spy):
    return spy.backend._tokenizer()


def processor_template(folder) -> str:
    """The chat template the checkpoint's processor uses (its ``chat_template.json``)."""
    return json.loads((folder / "chat_template.json").read_text())["chat_template"]


def image_token_id(folder) -> int:
    return json.loads((folder / "config.json").read_text())["image_token_id"]


# ---- the prompt and the image tokens at keep 1.0 and 0.5 ---------------------------------------

def expected_image_tokens(name, folder, spy, record) -> int:
    """What the checkpoint's processor makes of the images docq gave the model."""
    if name.startswith("SmolVLM"):
        from transformers import Idefics3Processor

        seq = Idefics3Processor.from_pretrained(folder).image_seq_len  # processor_config.json
        return (record["tiles_kept"] + 1) * seq  # the kept tiles and the page's overview
    from transformers import AutoImageProcessor

    merge = AutoImageProcessor.from_pretrained(folder).merge_size
    grids = spy.calls[0]["tensors"]["image_grid_thw"]
    assert grids.shape[0] == record["tiles_kept"] + 1
    return int(sum(int(g.prod()) // merge**2 for g in grids))


@pytest.fixture(scope="session")
def runs(real):
    """The plain ``docq ask`` runs several tests read: keep 1.0 (one question), keep 0.5 with
    two questions in one batch, and the same one at a time. name -> (records, spy)."""
    name, folder = real
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, args, questions in (("1.0", ["--keep", "1.0"], QUESTIONS[:1]),
                                     ("0.5 batched", ["--keep", "0.5", "--batch-size", "2"], QUESTIONS),
                                     ("0.5", ["--keep", "0.5", "--batch-size", "1"], QUESTIONS)):
            spy = Spy(mp)
            code, records, err = ask(folder, *args, questions=questions)
            assert code == 0, err
            out[key] = (records, spy)
    return out


def test_ask_image_tokens_per_keep(real, runs):
    name, folder = real
    counts = {}
    for keep in ("1.0", "0.5"):
        records, spy = runs[keep]
        record = records[0]
        assert record["error"] is None and record["model"] == str(folder)
        assert record["tiles_kept"] == -(-record["tiles_total"] * float(keep) // 1)
        ids = spy.prompts()[0]
        counts[keep] = int((ids == image_token_id(folder)).sum())
        assert counts[keep] == expected_image_tokens(name, folder, spy, record)
    print(f"{name}: image tokens at keep 1.0 / 0.5: {counts['1.0']} / {counts['0.5']}")
    assert counts["0.5"] < counts["1.0"]


def test_greedy_whatever_the_generation_config_says(real, runs):
    """The checkpoints' generation configs ask for sampling (Qwen3-VL: temperature 0.7, top-k 20)
    and Qwen2.5-VL's for a repetition penalty of 1.05: docq decodes plain greedy."""
    import copy

    name, folder = real
    records, spy = runs["1.0"]
    (kwargs,) = spy.generate_kwargs
    config = copy.deepcopy(spy.backend.model.generation_config)
    config.update(**{k: v for k, v in kwargs.items() if k != "stopping_criteria"})
    assert config.do_sample is False and config.num_beams == 1
    assert config.repetition_penalty in (None, 1.0) and not config.sequence_bias
    assert not config.no_repeat_ngram_size


def test_the_processors_chat_template_is_used(real, runs):
    """Qwen2.5-VL's tokenizer carries the text model's template (it cannot render images);
    the processor's ``chat_template.json`` is the one the checkpoint answers to."""
    name, folder = real
    records, spy = runs["1.0"]
    assert spy.backend.processor.chat_template == processor_template(folder)


def _collapse(text: str, pad: str) -> str:
    return re.sub(f"(?:{re.escape(pad)})+", pad, text)


def test_prompt_is_the_checkpoints_own(real, runs):
    """At keep 1.0 the ids docq gives the model are the ones the checkpoint's processor and
    chat template make of the same question and page grid."""
    name, folder = real
    from docvqa_cli import prompts
    from docvqa_cli.reading import documents, tiles

    records, spy = runs["1.0"]
    (ids,) = spy.prompts()
    tok = tokenizer_of(spy)
    question_text = prompts.render(prompts.load("default"), QUESTIONS[0])
    if name.startswith("SmolVLM"):
        from PIL import Image
        from transformers import Idefics3Processor

        processor = Idefics3Processor.from_pretrained(folder)
        page = documents.load(str(INVOICE))[0]
        grid = tiles.split(page, tile_px=processor.image_processor.max_image_size["longest_edge"],
                           max_tiles=spy.backend.max_tiles)
        rows, cols = grid[0].rows, grid[0].cols
        side = processor.image_processor.max_image_size["longest_edge"]
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        # An image of exactly rows x cols native crops: the processor splits it into that grid.
        image = Image.new("RGB", (cols * side, rows * side), "white")
        want = processor(text=text, images=[[image]], return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        assert tok.decode(ids) == tok.decode(want)
        assert ids.tolist() == want.tolist()
        return
    # Qwen: the processor class needs torchvision (its video processor); its chat template is
    # chat_template.json and it expands each <|image_pad|> to grid.prod() // merge**2 tokens.
    pad = "<|image_pad|>"
    text = tok.decode(ids)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    body = _collapse(text, pad).split("<|im_start|>user\n", 1)[1].rsplit("<|im_end|>\n<|im_start|>assistant\n", 1)[0]
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    content = []
    for i, part in enumerate(body.split(image)):
        if i:
            content.append({"type": "image"})
        if part:
            content.append({"type": "text", "text": part})
    assert content[-1]["text"].endswith(question_text)
    rendered = tok.apply_chat_template([{"role": "user", "content": content}], chat_template=processor_template(folder),
                                       add_generation_prompt=True, tokenize=False)
    assert _collapse(text, pad) == rendered
    from transformers import AutoImageProcessor

    merge = AutoImageProcessor.from_pretrained(folder).merge_size
    runs = [len(m.group(0)) // len(pad) for m in re.finditer(f"(?:{re.escape(pad)})+", text)]
    grids = spy.calls[0]["tensors"]["image_grid_thw"]
    assert runs == [int(g.prod()) // merge**2 for g in grids]


# ---- batching, the end of the turn, boxes ------------------------------------------------------

def test_batched_equals_one_at_a_time(runs):
    batched, spy = runs["0.5 batched"]
    assert len(spy.calls) == 1 and spy.calls[0]["tensors"]["input_ids"].shape[0] == 2
    single, spy = runs["0.5"]
    assert len(spy.calls) == 2
    assert [(r["answer"], r["confidence"], r["tiles_kept"]) for r in batched] == [
        (r["answer"], r["confidence"], r["tiles_kept"]) for r in single]


def end_of_turn(folder, tok) -> int:
    """The token the checkpoint's chat template closes an assistant turn with."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ANSWER"}]}]
    text = tok.apply_chat_template(messages, chat_template=processor_template(folder), tokenize=False)
    return tok(text.split("ANSWER", 1)[1], add_special_tokens=False)["input_ids"][0]


def forced(folder, text, then_end: bool = True):
    """A ``sequence_bias`` under which greedy decoding writes ``text`` (a str, or a function of
    the generate inputs giving one) and then the end-of-turn token: each token is favoured
    after the ones before it."""

    def bias(backend, tensors):
        tok = backend._tokenizer()
        ids = tok(text(tensors) if callable(text) else text, add_special_tokens=False)["input_ids"]
        if then_end:
            ids = ids + [end_of_turn(folder, tok)]
        return [[ids[: k + 1], 100.0 * (k + 1)] for k in range(len(ids))]

    return bias


def own_box_text(name: str, page, grid):
    """A function of the generate inputs: TOTAL and where it is printed, written the way the
    family writes boxes (Qwen: ``bbox_2d`` JSON, in pixels of the resized whole-page image
    for Qwen2.5-VL, 0-1000 for Qwen3-VL; SmolVLM has no box format of its own: the grounded
    prompt's ``box:`` line, 0-1000 of the whole page)."""
    from docvqa_cli.grounding import find_all

    x0, y0, x1, y1 = find_all(TOTAL, [page])[0].boxes[0]
    frac = (x0 / page.width, y0 / page.height, x1 / page.width, y1 / page.height)

    def text(tensors):
        if name.startswith("Qwen2.5"):
            _, gh, gw = (int(v) for v in tensors["image_grid_thw"][-1])  # the overview comes last
            w, h = gw * grid, gh * grid
            coords = [round(frac[0] * w), round(frac[1] * h), round(frac[2] * w), round(frac[3] * h)]
        else:
            coords = [round(1000 * v) for v in frac]
        if name.startswith("Qwen"):
            return f'{TOTAL}\n```json\n[{{"bbox_2d": {coords}, "label": "total"}}]\n```'
        return f"{TOTAL}\nbox: {coords}"

    return text, (x0, y0, x1, y1)


@pytest.fixture(scope="session")
def grounded(real):
    """``docq ask --prompt grounded`` with the logits steered to write TOTAL and its box in the
    family's own format, then the end-of-turn token. (spy, record, the text, TOTAL's box)."""
    name, folder = real
    from docvqa_cli.reading import documents

    page = documents.load(str(INVOICE))[0]
    patch = json.loads((folder / "preprocessor_config.json").read_text()).get("patch_size", 0)
    text, where = own_box_text(name, page, patch)
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp, bias=forced(folder, text))
        code, records, err = ask(folder, "--prompt", "grounded", "--max-new-tokens", "64")
    assert code == 0, err
    return spy, records[0], text, where


def test_decoding_ends_at_the_templates_end_of_turn(real, grounded):
    name, folder = real
    spy, record, text, _ = grounded
    tok = tokenizer_of(spy)
    eot = end_of_turn(folder, tok)
    assert eot in spy.calls[0]["eos_ids"]
    tokens = spy.calls[0]["rows"][0]["tokens"].tolist()
    want = tok(text(spy.calls[0]["tensors"]), add_special_tokens=False)["input_ids"]
    assert tokens == want + [eot]  # not one token more: it stopped right there


def test_grounded_prompt_reads_the_familys_boxes(grounded):
    spy, record, _, where = grounded
    assert record["error"] is None and record["answer"] == TOTAL  # the box markup is not part of it
    (generation,) = spy.generations
    (model_box,) = generation.boxes  # the model's own box, read and mapped to page points
    assert model_box.page == 1
    assert abs(model_box.x0 - where[0]) < 3 and abs(model_box.y0 - where[1]) < 3
    assert abs(model_box.x1 - where[2]) < 3 and abs(model_box.y1 - where[3]) < 3
    box = record["boxes"][0]
    assert box["x0"] < model_box.x1 and model_box.x0 < box["x1"] and box["y0"] < model_box.y1


# ---- docq tune, then --tie ------------------------------------------------------------------

def test_tune_two_steps_and_tie_loads(real, tmp_path, monkeypatch):
    name, folder = real
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"doc": str(INVOICE), "question": q, "answer": a}) + "\n"
                            for q, a in ((QUESTIONS[0], TOTAL), ("What is the invoice date?", "18 March 2024"))))
    out = tmp_path / "adapters"
    code, _, err = docq("tune", data, "--model", folder, "--out", out, "--steps", "2", "--heldout", "0",
                        "--checkpoint-every", "0", "--dpi", "72", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert (out / "tie_config.json").is_file() and (out / "adapters.safetensors").is_file()
    assert json.loads((out / "tie_config.json").read_text())["trained_steps"] == 2
    spy = Spy(monkeypatch)
    code, records, err = docq("ask", INVOICE, QUESTIONS[0], "--tie", out, "--device", "cpu", "--max-new-tokens", "2")
    assert code == 0, err
    assert records[0]["model"].endswith("+tie") and records[0]["error"] is None
    assert spy.backend.tie is not None and spy.backend.name == str(folder) + "+tie"
