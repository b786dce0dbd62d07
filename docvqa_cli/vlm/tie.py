"""TIE: a text-conditioned vision encoder, built as adapters around a backbone's encoder.

After each chosen encoder layer, the patch tokens cross-attend to the question's token
embeddings (rows of the language model's own input embedding table, projected to the
vision width by a small learned projection); the result is added scaled by ``tanh(gate)``
with every gate starting at 0, so untrained adapters leave the encoder exactly as it was.

The base model is never modified: adapters live in their own ``nn.Module`` and attach with
forward hooks on the encoder's layers. The question reaches the layers through a context
(``Tie.condition(question)``) that the hooks read on every call; outside it they do nothing.

Qwen-VL packs the patches of all images into one (seq, D) sequence: a pre-hook on the vision
tower reads ``grid_thw`` and finds each image's run and patch order (the family's
``FamilySpec.patch_order``, in ``vlm/families/qwen.py``), so
each image's patches attend to their own question and recorded attention comes back per image
in row-major grid order.

``use_tie(backend, folder)`` loads trained adapters onto a loaded backend (``--tie``); the
trainer is ``tune.py``, the visual relevance scorer that reads the adapters' attention is
``vlm/visual.py``.

Layout of a saved adapter folder: ``tie_config.json`` (base model, family, layer plan,
sizes) and ``adapters.safetensors``.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from docvqa_cli.errors import InputError, UsageError
from docvqa_cli.vlm.base import FamilySpec
from docvqa_cli.vlm.families import families

CONFIG_NAME = "tie_config.json"
WEIGHTS_NAME = "adapters.safetensors"
FORMAT_VERSION = 1
DEFAULT_EVERY = 1  # adapters after every layer (the paper's "all layers"); 2 halves their cost
DEFAULT_INNER = 256  # cross-attention width (bottleneck); small next to the encoder's own layers
DEFAULT_HEADS = 4


def spec_for(model) -> FamilySpec:
    """The TIE spec of ``model``'s family (``Backend.tie_spec``), or UsageError."""
    known = families()
    mt = getattr(model.config, "model_type", "")
    family = known.get(mt)
    if family is not None and family.tie_spec is not None:
        return family.tie_spec
    supported = ", ".join(t for t, cls in known.items() if cls.tie_spec is not None)
    raise UsageError(f"TIE does not support model type {mt!r} (known: {supported})")


# ---------------------------------------------------------------------------------------
# The adapters.


@dataclass
class TieConfig:
    base_model: str
    family: str
    model_type: str
    layers: list[int]  # encoder layer indices followed by an adapter
    every: int
    num_layers: int
    width: int  # the vision encoder's hidden size
    text_dim: int  # the language model's embedding size
    inner: int = DEFAULT_INNER
    heads: int = DEFAULT_HEADS
    version: int = FORMAT_VERSION
    trained_steps: int = 0
    notes: dict = field(default_factory=dict)


def read_config(folder) -> TieConfig:
    """The config of a saved adapter folder, or InputError saying what is wrong with it."""
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise InputError(str(folder), f"not a TIE adapter folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        cfg = TieConfig(**json.loads(cfg_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise InputError(str(cfg_path), f"bad TIE config: {exc}") from None
    if cfg.version > FORMAT_VERSION:
        raise InputError(str(cfg_path), f"TIE format {cfg.version} is newer than this docq ({FORMAT_VERSION})")
    return cfg


def layer_plan(num_layers: int, every: int) -> list[int]:
    """Indices of the layers followed by an adapter: every ``every``-th, always the last."""
    if every < 1:
        raise UsageError("--tie-every must be 1 or more")
    plan = list(range(every - 1, num_layers, every))
    if num_layers and (not plan or plan[-1] != num_layers - 1):
        plan.append(num_layers - 1)
    return plan


class CrossAttention(nn.Module):
    """Patches (queries) attend to question tokens (keys/values); output scaled by tanh(gate)."""

    def __init__(self, width: int, inner: int, heads: int):
        super().__init__()
        if inner % heads:
            raise ValueError("inner must be a multiple of heads")
        self.heads, self.head_dim = heads, inner // heads
        self.norm = nn.LayerNorm(width)
        self.q = nn.Linear(width, inner)
        self.k = nn.Linear(width, inner)
        self.v = nn.Linear(width, inner)
        self.o = nn.Linear(inner, width)
        self.gate = nn.Parameter(torch.zeros(1))

    def logits(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, heads, P, T) attention logits, padded question tokens at -inf."""
        n, p, _ = x.shape
        q = self.q(self.norm(x)).view(n, p, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(text).view(text.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)
        att = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        return att.masked_fill(~mask[:, None, None, :], float("-inf"))

    def forward(self, x, text, mask):
        att = self.logits(x, text, mask)
        v = self.v(text).view(text.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return torch.tanh(self.gate) * self.o(out), att


class TieAdapters(nn.Module):
    def __init__(self, config: TieConfig):
        super().__init__()
        self.config = config
        self.text_proj = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, config.width))
        self.blocks = nn.ModuleDict(
            {str(i): CrossAttention(config.width, config.inner, config.heads) for i in config.layers}
        )


@dataclass
class _Condition:
    embeds: torch.Tensor  # (B, T, text_dim), frozen rows of the LM embedding table
    mask: torch.Tensor  # (B, T) bool
    groups: torch.Tensor | None = None  # (images,) image -> question row, when B > 1
    record: bool = False  # keep each adapter's attention logits (for scoring / the relevance loss)
    # Each record: (images, heads, P, T) logits; for packed families a list with one
    # (heads, P_i, T) per image, its patches in row-major grid order.
    records: list = field(default_factory=list)
    # Packed families: per image of the current vision call, (start, end, order) in the packed
    # sequence (``FamilySpec.patch_order``); set by a pre-hook on the vision tower.
    layout: list | None = None


class Tie:
    """Adapters attached to one loaded model. ``with tie.condition(question): model(...)``."""

    def __init__(self, model, adapters: TieAdapters, spec: FamilySpec, tokenizer=None):
        self.model = model
        self.adapters = adapters
        self.spec = spec
        self.tokenizer = tokenizer
        self.config = adapters.config
        self.checkpointing = False
        self._cond: _Condition | None = None
        layers = spec.layers(model)
        if len(layers) != self.config.num_layers:
            raise UsageError(
                f"TIE adapters were made for {self.config.num_layers} encoder layers, "
                f"this model has {len(layers)} (base model {self.config.base_model!r})"
            )
        self._handles = [layers[i].register_forward_hook(self._hook(str(i))) for i in self.config.layers]
        if spec.packed:  # learn which positions of the packed sequence belong to which image
            self._handles.append(spec.vision(model).register_forward_pre_hook(self._layout_hook, with_kwargs=True))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, model, base_model: str, tokenizer=None, every: int = DEFAULT_EVERY,
               inner: int = DEFAULT_INNER, heads: int = DEFAULT_HEADS, seed: int = 0) -> "Tie":
        spec = spec_for(model)
        n = len(spec.layers(model))
        width = model.config.vision_config.hidden_size
        text_dim = model.get_input_embeddings().weight.shape[1]
        inner = min(inner, width - width % heads) if width >= heads else heads
        cfg = TieConfig(base_model=base_model, family=spec.family, model_type=model.config.model_type,
                        layers=layer_plan(n, every), every=every, num_layers=n, width=width,
                        text_dim=text_dim, inner=inner, heads=heads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapters = TieAdapters(cfg)
        return cls(model, cls._place(adapters, model), spec, tokenizer)

    @staticmethod
    def _place(adapters: TieAdapters, model) -> TieAdapters:
        """In the model's dtype (``load.resolve_dtype``), on its device."""
        weight = model.get_input_embeddings().weight
        device = weight.device
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        return adapters.to(device=device, dtype=dtype)

    @classmethod
    def load(cls, folder, model, tokenizer=None, base_model: str | None = None) -> "Tie":
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg, w_path = read_config(folder), folder / WEIGHTS_NAME
        spec = spec_for(model)
        if cfg.family != spec.family or cfg.width != model.config.vision_config.hidden_size:
            raise UsageError(
                f"TIE adapters in {folder} were trained for {cfg.base_model!r} ({cfg.model_type}, width "
                f"{cfg.width}); the loaded model is {base_model or model.config.model_type!r} "
                f"(width {model.config.vision_config.hidden_size})"
            )
        adapters = TieAdapters(cfg)
        state = load_file(str(w_path))
        missing, unexpected = adapters.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(str(w_path), f"weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(model, cls._place(adapters, model), spec, tokenizer)

    def save(self, folder) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.adapters.state_dict().items()}
        tmp = folder / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "base_model": self.config.base_model})
        tmp.replace(folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return folder

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def parameters(self):
        return self.adapters.parameters()

    # -- conditioning -------------------------------------------------------------------
    def question_ids(self, question: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T) and mask of the question(s), without special tokens."""
        if self.tokenizer is None:
            raise UsageError("TIE needs the model's tokenizer to condition on a question")
        questions = [question] if isinstance(question, str) else list(question)
        rows = [self.tokenizer(q, add_special_tokens=False)["input_ids"] or [self._fallback_id()] for q in questions]
        t = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), t, dtype=torch.long)
        mask = torch.zeros(len(rows), t, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return ids, mask

    def _fallback_id(self) -> int:
        tok = self.tokenizer
        for name in ("unk_token_id", "pad_token_id", "eos_token_id"):
            v = getattr(tok, name, None)
            if v is not None:
                return int(v)
        return 0

    def question_embeddings(self, question) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.model.get_input_embeddings()
        ids, mask = self.question_ids(question)
        with torch.no_grad():
            emb = table(ids.to(table.weight.device))
        return emb.detach(), mask.to(emb.device)

    @contextlib.contextmanager
    def condition(self, question, groups: torch.Tensor | None = None, record: bool = False):
        """Within this block the adapters see ``question`` (a string, or one per image group)."""
        emb, mask = self.question_embeddings(question)
        cond = _Condition(emb, mask, groups, record)
        prev, self._cond = self._cond, cond
        try:
            yield cond
        finally:
            self._cond = prev

    # -- the hooks ------------------------------------------------------------------------
    def _layout_hook(self, module, args, kwargs):
        cond = self._cond
        if cond is None:
            return None
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is None:
            cond.layout = None
            return None
        layout, start = [], 0
        for order in self.spec.patch_order(module, grid):
            layout.append((start, start + order.numel(), order))
            start += order.numel()
        cond.layout = layout
        return None

    def _hook(self, key: str):
        def hook(module, args, output):
            cond = self._cond
            if cond is None:
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            new = self._apply(key, hidden)
            if isinstance(output, tuple):
                return (new,) + tuple(output[1:])
            return new

        return hook

    def _apply(self, key: str, hidden: torch.Tensor) -> torch.Tensor:
        if self.spec.packed and hidden.dim() == 2:
            return self._apply_packed(key, hidden)
        cond = self._cond
        block = self.adapters.blocks[key]
        dtype = next(block.parameters()).dtype
        x = hidden.unsqueeze(0) if self.spec.packed or hidden.dim() == 2 else hidden
        text = cond.embeds.to(dtype)
        mask = cond.mask
        if text.shape[0] != 1 or cond.groups is not None:
            groups = cond.groups if cond.groups is not None else torch.arange(x.shape[0], device=text.device)
            text, mask = text[groups], mask[groups]

        def run(x_, text_):
            return block(x_.to(dtype), self.adapters.text_proj(text_), mask)

        if self.checkpointing and torch.is_grad_enabled():
            delta, att = checkpoint(run, x, text, use_reentrant=False)
        else:
            delta, att = run(x, text)
        if cond.record:
            cond.records.append(att)
        out = x + delta.to(x.dtype)
        return out.squeeze(0) if x is not hidden else out


    def _apply_packed(self, key: str, hidden: torch.Tensor) -> torch.Tensor:
        """Qwen: ``hidden`` is (seq, D), the patches of all images packed. Each image's patches
        attend to its own question row (``groups``: image -> row); the images of one row go
        through the cross-attention together (patches never attend to each other there)."""
        cond = self._cond
        block = self.adapters.blocks[key]
        dtype = next(block.parameters()).dtype
        text, mask = cond.embeds.to(dtype), cond.mask
        layout = cond.layout or [(0, hidden.shape[0], None)]
        if cond.groups is not None:
            rows = [int(g) for g in cond.groups]
        elif text.shape[0] == 1:
            rows = [0] * len(layout)
        else:
            rows = list(range(len(layout)))
        if len(rows) != len(layout) or (cond.layout is None and text.shape[0] != 1):
            raise UsageError(f"TIE: {len(rows)} image groups for {len(layout)} images in the packed sequence")

        def run(x_, text_, mask_):
            return block(x_.to(dtype), self.adapters.text_proj(text_), mask_)

        delta = None
        atts: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for row in sorted(set(rows)):
            mine = [i for i, r in enumerate(rows) if r == row]
            whole = len(mine) == len(layout)
            idx = None if whole else torch.cat(
                [torch.arange(layout[i][0], layout[i][1], device=hidden.device) for i in mine])
            x = (hidden if idx is None else hidden.index_select(0, idx)).unsqueeze(0)
            t_, m_ = text[row:row + 1], mask[row:row + 1]
            if self.checkpointing and torch.is_grad_enabled():
                d, att = checkpoint(run, x, t_, m_, use_reentrant=False)
            else:
                d, att = run(x, t_, m_)
            d = d[0].to(hidden.dtype)
            if idx is None:
                delta = d
            else:
                delta = (torch.zeros_like(hidden) if delta is None else delta).index_copy(0, idx, d)
            if cond.record:
                pos = 0
                for i in mine:
                    n = layout[i][1] - layout[i][0]
                    atts[i] = (att[0, :, pos:pos + n], layout[i][2])
                    pos += n
        if cond.record:
            per_image = []
            for i in range(len(layout)):
                a, order = atts[i]
                if order is not None:  # sequence order -> row-major grid order
                    a = a[:, torch.argsort(order.to(a.device))]
                per_image.append(a)
            cond.records.append(per_image)
        return hidden + delta


def use_tie(backend, folder):
    """Load trained adapters onto ``backend``'s model; its answers are then question-conditioned.

    Sets ``backend.tie`` and marks the model name (``name+tie``) so records say adapters were used.
    """
    import sys

    tokenizer = getattr(backend.processor, "tokenizer", backend.processor)
    tie = Tie.load(folder, backend.model, tokenizer=tokenizer, base_model=backend.name)
    if tie.config.base_model != backend.name and Path(tie.config.base_model).name != Path(backend.name).name:
        print(f"note: TIE adapters in {folder} were trained on {tie.config.base_model}, not {backend.name}",
              file=sys.stderr)
    plain_answer = backend.answer

    def answer(question, views, prompt, max_new_tokens=32):
        with torch.no_grad(), tie.condition(question):
            return plain_answer(question, views, prompt, max_new_tokens)

    backend.answer = answer
    backend.tie = tie
    backend.name = f"{backend.name}+tie"
    return backend
