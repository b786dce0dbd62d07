"""The backend protocol: what a model family must do to answer over kept tiles.

A backend is split like a Hugging Face pipeline: ``preprocess`` builds the inputs (prompt
text, the overview(s) and the kept tiles only), ``forward`` runs the model (the only step
that touches the device), ``postprocess`` turns ids into a ``Generation``. ``answer`` runs
the three in order. Families subclass ``Backend`` and register in ``vlm/families/``.

Batching: ``answer_batch(items, prompt, max_new_tokens)`` answers several (question, views)
items in one padded ``generate`` when the family implements ``forward_batch`` (left
padding, so every row's last prompt token sits at the same place); greedy tokens are the
same as one at a time. The base class loops over ``answer`` otherwise. With TIE adapters
(``backend.tie``) a batch is conditioned per item (``tie.condition(questions, groups=...)``)
where the family can say which image belongs to which item (``tie_groups``), else it is
answered one at a time.

Decoding (``generate_rows``, shared by the families): greedy, stopping at the model's end
tokens and, when the prompt declares ``# stop: newline``, at the first line break after some
text; ``decode = "static"`` uses transformers' static KV cache (``cache_implementation=
"static"``), which transformers compiles itself on CUDA; ``"plain"`` is the dynamic cache.
The chosen tokens' log-probabilities are taken on the device, so only a few numbers per
token come back to the CPU.

Shape buckets (static decode): the compiled decode step is specialised to the cache's shape
(batch rows x cache length), so both are rounded up to a few fixed sizes (``bucket``: powers
of two and 1.5x powers of two): the cache length of each call is its own prompt plus new
tokens rounded up (``cache_length``: a short document after a long one gets a short cache
again; transformers alone keeps the longest length ever seen), and where the step compiles
(``pads_batches``: CUDA) a batch is filled up to its bucket with copies of its last item,
whose answers are dropped. So compilation happens once per bucket, not once per shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from PIL import Image

from docvqa_cli.errors import UsageError
from docvqa_cli.reading.documents import Page
from docvqa_cli.reading.tiles import Tile


@dataclass
class PageView:
    """One page as the model sees it: its overview and the kept tiles (in reading order)."""

    page: Page
    overview: Image.Image
    tiles: list[Tile]


@dataclass
class ModelBox:
    """A box the model emitted itself, already mapped back to page points."""

    page: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Generation:
    text: str
    confidence: float | None = None  # geometric mean of the generated tokens' probabilities
    image_tokens: int = 0  # image tokens in the prompt (what the vision encoder produced)
    images_encoded: int = 0  # images given to the vision encoder (tiles + overviews)
    boxes: list[ModelBox] = field(default_factory=list)


# The grounded prompt's own box line (prompts/grounded.txt): "box: [x0, y0, x1, y1]", 0-1000 of
# the whole-page image. Families read it whether or not they have a box format of their own.
BOX_LINE = re.compile(r"\bbox\s*:\s*\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)"
                      r"\s*,\s*(-?\d+(?:\.\d+)?)\s*\]", re.I)


def split_box_lines(text: str, page: int, width: float, height: float) -> tuple[str, list[ModelBox]]:
    """The text without its ``box: [...]`` lines, and those boxes in points of ``page``
    (``width`` x ``height`` points; the numbers are thousandths of the whole page)."""
    if not BOX_LINE.search(text):
        return text, []
    boxes = []
    for m in BOX_LINE.finditer(text):
        x0, y0, x1, y1 = (min(max(float(g), 0.0), 1000.0) / 1000 for g in m.groups())
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if x1 > x0 and y1 > y0:
            boxes.append(ModelBox(page, x0 * width, y0 * height, x1 * width, y1 * height))
    return " ".join(BOX_LINE.sub(" ", text).split()), boxes

def processor_chat_template(source: str, local_files_only: bool = False, **_) -> str | None:
    """The chat template of a checkpoint's processor (``chat_template.jinja`` or
    ``chat_template.json``), None if it has none. It can differ from the tokenizer's: Qwen2.5-VL's
    tokenizer carries the text model's template, which cannot render images."""
    import json

    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(source, name, local_files_only=local_files_only,
                               _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except Exception:  # noqa: BLE001 - no such file where it looked
            path = None
        if path:
            text = open(path, encoding="utf-8").read()
            return text if name.endswith(".jinja") else json.loads(text).get("chat_template")
    return None


STATIC_PAD_MULTIPLE = 64  # static decode: prompts left-padded to a multiple of this (fewer shapes)
MIN_CACHE_LENGTH = 256  # static decode: the smallest cache-length bucket


def bucket(n: int, smallest: int = 1) -> int:
    """``n`` rounded up to the next of smallest * (1, 1.5, 2, 3, 4, 6, 8, ...) (at most a
    third wasted), so a compiled shape serves every size up to it."""
    size = max(1, int(smallest))
    while size < n:
        half = size + size // 2
        if half >= n and half != size:
            return half
        size *= 2
    return size


def cache_length(prompt_tokens: int, max_new_tokens: int) -> int:
    """The static cache's length for a call: its prompt plus new tokens, bucketed."""
    return bucket(prompt_tokens + max_new_tokens, MIN_CACHE_LENGTH)


def first_line(text: str) -> str:
    """The text up to its first line break after some text (the ``stop: newline`` answer)."""
    text = text.lstrip()
    return text.split("\n", 1)[0].strip()


def confidence_from_logprobs(logprobs: list[float]) -> float | None:
    """Geometric mean of the chosen tokens' probabilities; None if no token."""
    if not logprobs:
        return None
    return float(math.exp(sum(logprobs) / len(logprobs)))


def _newline_stop(newline_ids, blank_ids):
    """A stopping criterion: a row stops at a token with a line break once it has some text."""
    from transformers import StoppingCriteria

    class NewlineStop(StoppingCriteria):
        """Two boolean tables over the vocabulary (line break, blank), moved to the device once;
        each step is two lookups there: no copy from the host, no wait for the device."""

        def __init__(self):
            self.seen = None
            self.tables = None

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            last = input_ids[:, -1]
            if self.tables is None or self.tables[0].device != last.device:
                size = int(max(newline_ids.max().item() if newline_ids.numel() else 0,
                               blank_ids.max().item() if blank_ids.numel() else 0)) + 1
                if scores is not None:
                    size = max(size, int(scores.shape[-1]))
                tables = torch.zeros((2, size), dtype=torch.bool)
                tables[0, newline_ids] = True
                tables[1, blank_ids] = True
                self.tables = tables.to(last.device)
            if self.seen is None or self.seen.shape[0] != last.shape[0]:
                self.seen = torch.zeros(last.shape[0], dtype=torch.bool, device=last.device)
            newline, blank = self.tables[0], self.tables[1]
            safe = last.clamp(0, newline.shape[0] - 1)  # ids past the tables are neither
            inside = last < newline.shape[0]
            self.seen |= ~(blank[safe] & inside)
            return newline[safe] & inside & self.seen

    return NewlineStop()


def find_module(model: Any, paths: tuple[str, ...]) -> Any:
    """The first of the dotted ``paths`` (``model.visual``) that ``model`` has, or UsageError."""
    for path in paths:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise UsageError(f"TIE: cannot find the vision encoder of {type(model).__name__} (tried {', '.join(paths)})")


@dataclass(frozen=True)
class FamilySpec:
    """What TIE (``vlm/tie.py``) and the visual scorer (``vlm/visual.py``) need to know of a
    family: where its vision encoder's layers are and how to encode one overview. A family
    sets its own as ``Backend.tie_spec``; ``family`` is saved in the adapters' config."""

    family: str
    layer_paths: tuple[str, ...]  # dotted paths to the encoder's nn.ModuleList of layers
    vision_paths: tuple[str, ...]  # dotted paths to the vision tower (for encode_overview)
    # encode_overview(model, processor, image, project) -> (tokens (g_h*g_w, D), (g_h, g_w));
    # project=True: after the connector (LM space); False: the encoder's last layer (patch grid).
    encode_overview: Callable | None = None
    # Families whose encoder packs the patches of all images into one (seq, D) sequence (Qwen)
    # rather than (images, P, D): patch_order(vision, grid_thw) -> one tensor per image, the
    # row-major patch index of each of the image's positions, in sequence order.
    patch_order: Callable | None = None

    @property
    def packed(self) -> bool:
        return self.patch_order is not None

    def layers(self, model):
        return find_module(model, self.layer_paths)

    def vision(self, model):
        return find_module(model, self.vision_paths)


class Backend:
    """Base class of model families. Subclasses set the class attributes and the 3 steps."""

    family: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()  # config.model_type values this family serves
    tile_px: int = 512  # the tile size the model wants (its native crop size)
    max_tiles: int = 12
    can_ground: bool = False  # whether prompts may ask it for boxes
    batches: ClassVar[bool] = False  # forward_batch runs several items in one padded generate
    image_tokens_per_image: int = 256  # for the batch-size estimate (families set their own)
    vision_patches_per_token: int = 4  # vision-encoder patches merged into one image token (2 x 2)
    decode: str = "plain"  # "plain" (dynamic KV cache) or "static" (static cache, compiled on CUDA)
    pad_batches: bool | None = None  # fill batches up to their bucket; None: where the decode compiles
    min_new_tokens: int = 0  # benchmarks: force this many tokens (no early end)
    tie: Any = None  # TIE adapters (tie.use_tie), or None
    # Token ids that end an answer: generation stops at any of them; training (``tune``)
    # appends the first to each answer. Families set their own in ``__init__``.
    eos_ids: list[int] = []
    tie_spec: ClassVar[FamilySpec | None] = None  # what TIE and the visual scorer need; None: no TIE

    def __init__(self, model: Any, processor: Any, name: str, device: Any):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self._vocab_sets = None

    def preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        raise NotImplementedError

    def forward(self, inputs: dict, max_new_tokens: int) -> dict:
        raise NotImplementedError

    def postprocess(self, outputs: dict, inputs: dict) -> Generation:
        raise NotImplementedError

    def patches_per_image_token(self) -> int:
        """Vision-encoder patches behind one image token (its activations are what a batch's
        vision step holds): ``vision_patches_per_token``, which families set from their config."""
        return int(self.vision_patches_per_token)

    def forward_batch(self, inputs: list[dict], max_new_tokens: int) -> list[dict]:
        """Several preprocessed items in one padded generate (families with ``batches``)."""
        return [self.forward(i, max_new_tokens) for i in inputs]

    def tie_groups(self, inputs: list[dict]):
        """For TIE in a batch: the item of each image the encoder sees, or None if unknown."""
        return None

    def model_inputs(self, inputs: dict) -> dict:
        """The tensors of a preprocessed item that the model's forward takes (``tune`` appends
        the answer to them); families that nest them override this."""
        return inputs

    def _preprocess(self, question: str, views: list[PageView], prompt: str) -> dict:
        from docvqa_cli import prompts

        inputs = self.preprocess(question, views, prompt)
        inputs.setdefault("stop", prompts.settings(prompt).stop)
        return inputs

    def answer(self, question: str, views: list[PageView], prompt: str, max_new_tokens: int = 32) -> Generation:
        inputs = self._preprocess(question, views, prompt)
        outputs = self.forward(inputs, max_new_tokens)
        return self.postprocess(outputs, inputs)

    def answer_batch(self, items: list[tuple[str, list[PageView]]], prompt: str,
                     max_new_tokens: int = 32) -> list[Generation]:
        """One ``Generation`` per (question, views) item, in order; the same greedy answers as
        ``answer`` one at a time, in one padded forward where the family can."""
        items = list(items)
        tie = getattr(self, "tie", None)
        if len(items) <= 1 or not self.batches:
            return [self.answer(q, v, prompt, max_new_tokens) for q, v in items]
        inputs = [self._preprocess(q, v, prompt) for q, v in items]
        n = len(inputs)
        if self.pads_batches():  # copies of the last item up to the bucket; their answers are dropped
            extra = bucket(n) - n
            inputs, items = inputs + [inputs[-1]] * extra, items + [items[-1]] * extra
        if tie is None:
            outputs = self.forward_batch(inputs, max_new_tokens)
        else:
            groups = self.tie_groups(inputs)
            if groups is None:  # the family cannot say which image is whose: one at a time
                return [self.answer(q, v, prompt, max_new_tokens) for q, v in items[:n]]
            import torch

            with torch.no_grad(), tie.condition([q for q, _ in items], groups=groups):
                outputs = self.forward_batch(inputs, max_new_tokens)
        return [self.postprocess(o, i) for o, i in zip(outputs[:n], inputs[:n])]

    def pads_batches(self) -> bool:
        """Whether batches are filled up to their bucket: set by ``pad_batches``, else where the
        static decode is compiled (CUDA), since each new batch size would compile again."""
        if self.pad_batches is not None:
            return bool(self.pad_batches)
        return self.decode == "static" and getattr(self.device, "type", str(self.device)) == "cuda"

    # --- decoding, shared by the families ----------------------------------------------------

    def _tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def vocab_sets(self):
        """(ids of tokens holding a line break, ids of whitespace-only tokens), as tensors."""
        if self._vocab_sets is None:
            import torch

            tok = self._tokenizer()
            n = len(tok)
            texts = tok.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
            newline = [i for i, t in enumerate(texts) if "\n" in t]
            blank = [i for i, t in enumerate(texts) if not t.strip()]
            self._vocab_sets = (torch.tensor(newline, dtype=torch.long), torch.tensor(blank, dtype=torch.long))
        return self._vocab_sets

    def generate_rows(self, tensors: dict, max_new_tokens: int, stop: str, eos_ids: list[int],
                      pad_id: int) -> list[dict]:
        """Greedy generate over a left-padded batch: per row, the new token ids and their
        log-probabilities (CPU), up to and including the stop token."""
        import torch

        kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,  # plain greedy: Qwen2.5-VL's generation config asks for 1.05
            output_logits=True,
            return_dict_in_generate=True,
            eos_token_id=list(eos_ids) or None,
            pad_token_id=pad_id,
        )
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = min(self.min_new_tokens, max_new_tokens)
        if stop == "newline":
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([_newline_stop(*self.vocab_sets())])
        if self.decode == "static":
            kwargs["cache_implementation"] = "static"
            prompt_tokens = tensors["input_ids"].shape[1] if "input_ids" in tensors else 0
            # transformers sizes a static cache to the longest length it has ever seen (and
            # reads it from here); the bucket of this call's own length lets it shrink again.
            self.model._previous_max_cache_length = cache_length(prompt_tokens, max_new_tokens)
        with torch.inference_mode():
            out = self.model.generate(**tensors, **kwargs)
        prompt_len = tensors["input_ids"].shape[1] if "input_ids" in tensors else 0
        new = out.sequences[:, prompt_len:]
        steps = min(len(out.logits), new.shape[1])
        if steps:
            logp = torch.stack([
                torch.log_softmax(out.logits[i].float(), dim=-1).gather(1, new[:, i:i + 1].to(out.logits[i].device))[:, 0]
                for i in range(steps)
            ], dim=1).cpu()
        else:
            logp = torch.zeros(new.shape[0], 0)
        new = new.cpu()
        return [{"tokens": new[b, :steps], "logprobs": logp[b]} for b in range(new.shape[0])]

    def finish(self, tokens: list[int], logprobs: list[float], eos_ids, stop: str) -> tuple[str, float | None]:
        """The answer text and confidence of one row: tokens up to the first end token; with
        ``stop == "newline"`` the text's first line (its closing line-break token not counted)."""
        n = next((i for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
        tok = self._tokenizer()
        if stop == "newline" and n:
            newline, blank = self.vocab_sets()
            blank_set = set(blank.tolist())
            if tokens[n - 1] in set(newline.tolist()) and tokens[n - 1] in blank_set and any(
                t not in blank_set for t in tokens[: n - 1]
            ):
                n -= 1
        text = tok.decode(tokens[:n], skip_special_tokens=True)
        if stop == "newline":
            text = first_line(text)
        return text, confidence_from_logprobs(list(logprobs[:n]))

    def pad_multiple(self) -> int:
        """Left-pad prompts to a multiple of this (static decode: fewer cache shapes to compile)."""
        return STATIC_PAD_MULTIPLE if self.decode == "static" else 1


def pixels_to(pixels, device, dtype):
    """Pixel values on ``device`` in ``dtype``: cast on the host first (bf16 halves the bytes
    to copy), and on CUDA copied from pinned memory without blocking the host."""
    import torch

    pixels = pixels.to(dtype)
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return pixels.pin_memory().to(device, non_blocking=True)
    return pixels.to(device)


def left_pad(rows: list, pad_value, multiple: int = 1):
    """(B, T) tensor of 1-D rows (each (1, L) or (L,)) padded on the left to a common length,
    rounded up to ``multiple``; and the attention mask (0 on the padding)."""
    import torch

    rows = [r.reshape(-1) for r in rows]
    longest = max(r.shape[0] for r in rows)
    longest = -(-longest // multiple) * multiple
    out = torch.full((len(rows), longest), pad_value, dtype=rows[0].dtype)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for b, r in enumerate(rows):
        if r.shape[0]:
            out[b, longest - r.shape[0]:] = r
            mask[b, longest - r.shape[0]:] = 1
    return out, mask
