"""``docq tune``: train TIE adapters on a user's own labelled documents, the base model frozen.

Records ``{doc, question, answer, page?}`` (JSONL). For each: the document's pages are loaded
once, tiled like the pipeline does, and the answer is located on the page (``grounding``).
The loss is the language-model loss on the answer's tokens (the prompt is the pipeline's:
overview plus kept tiles, with the answer's tile always kept) plus, when the answer was
found, a tile-relevance loss: the adapters' attention mass over the page overview, summed
per tile, must fall on the tile that holds the answer (cross-entropy over tiles).

A fixed, seeded share of the records is held out; its losses and the visual scorer's
top-1 hit rate are reported before and after training. Checkpoints (adapters, optimizer
state, step) go to ``OUT/checkpoint`` every ``checkpoint_every`` steps and a later run with
``resume`` goes on from there. All files are safetensors or JSON.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from docvqa_cli import grounding, relevance
from docvqa_cli.errors import InputError, UsageError
from docvqa_cli.reading import documents, tiles
from docvqa_cli.options import TuneOptions  # noqa: F401 (the trainer's options, with the others)
from docvqa_cli.vlm.base import Backend, PageView
from docvqa_cli.vlm.tie import Tie
from docvqa_cli.vlm.visual import VisualScorer, patch_mass, tile_masses

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
METRICS_NAME = "metrics.json"


@dataclass
class Example:
    doc: str
    question: str
    answer: str
    page: int | None = None
    line: int = 0


@dataclass
class Prepared:
    example: Example
    pages: list
    views: list[PageView]
    positive_page: object | None = None  # Page whose overview the relevance loss looks at
    page_tiles: list = field(default_factory=list)  # that page's tiles
    positives: list[int] = field(default_factory=list)  # indices into page_tiles


# ---- data --------------------------------------------------------------------------------


def read_examples(path: str | Path) -> list[Example]:
    """The records of a JSONL file; doc paths are taken relative to the file's folder if needed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(str(path), exc.strerror or str(exc)) from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            doc, question, answer = rec["doc"], rec["question"], rec["answer"]
            if not all(isinstance(v, str) and v.strip() for v in (doc, question, answer)):
                raise ValueError("doc, question and answer must be non-empty strings")
            page = rec.get("page")
            if page is not None and (not isinstance(page, int) or page < 1):
                raise ValueError("page must be a 1-based integer")
        except (ValueError, KeyError) as exc:
            cause = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"{path}:{n}", cause) from None
        p = Path(doc)
        if not p.is_absolute() and not p.exists() and (path.parent / p).exists():
            doc = str(path.parent / p)
        out.append(Example(doc, question, answer, page, n))
    if not out:
        raise InputError(str(path), "no records")
    return out


def split_heldout(examples: list[Example], fraction: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """A deterministic split: an example is held out by the hash of (seed, doc, question).
    With 2+ examples and fraction > 0 at least one is held out and at least one trains."""
    if not 0 <= fraction < 1:
        raise UsageError("--heldout must be in [0, 1)")
    if fraction == 0 or len(examples) < 2:
        return list(examples), []

    def key(e):
        return hashlib.sha256(f"{seed}\0{e.doc}\0{e.question}".encode()).hexdigest()

    ranked = sorted(examples, key=key)
    n = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    held = set(id(e) for e in ranked[:n])
    return [e for e in examples if id(e) not in held], [e for e in examples if id(e) in held]


# ---- the trainer -------------------------------------------------------------------------


class Trainer:
    def __init__(self, backend: Backend, tie: Tie, options: TuneOptions, say: Callable[[str], None] | None = None):
        self.backend = backend
        self.tie = tie
        self.opt = options
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.model = backend.model
        self.tokenizer = getattr(backend.processor, "tokenizer", backend.processor)
        self._pages: dict[tuple, list] = {}
        from docvqa_cli import prompts

        self.template = options.prompt if options.prompt is not None else prompts.load(prompts.DEFAULT)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in tie.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW([p for p in tie.parameters()], lr=options.lr, weight_decay=0.0)
        self.scorer = VisualScorer(self.model, backend.processor, tie=tie) if tie.spec.encode_overview else None

    # -- preparing one example (pages cached per document) --------------------------------
    def pages(self, ex: Example) -> list:
        key = (ex.doc, ex.page)
        if key not in self._pages:
            try:
                self._pages[key] = documents.load(
                    ex.doc, pages=[ex.page] if ex.page else None, dpi=self.opt.dpi, ocr=self.opt.ocr
                )
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line naming the file
                raise InputError(ex.doc, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return self._pages[key]

    def prepare(self, ex: Example) -> Prepared:
        from docvqa_cli.pipeline import page_views

        pages = self.pages(ex)
        all_tiles = [t for p in pages for t in tiles.split(p, tile_px=self.backend.tile_px, max_tiles=self.backend.max_tiles)]
        kept = [s.tile for s in relevance.select(relevance.score(ex.question, all_tiles), self.opt.keep)]
        prep = Prepared(ex, pages, [])
        match = grounding.locate(ex.answer, pages)
        if match is not None and match.boxes:
            page = next(p for p in pages if p.number == match.page)
            box = (min(b[0] for b in match.boxes), min(b[1] for b in match.boxes),
                   max(b[2] for b in match.boxes), max(b[3] for b in match.boxes))
            page_tiles = [t for t in all_tiles if t.page is page]
            pos = [i for i, t in enumerate(page_tiles) if t.contains(box)]
            if not pos:  # spans a border: the tile under the box's centre
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                pos = [i for i, t in enumerate(page_tiles) if t.box[0] <= cx <= t.box[2] and t.box[1] <= cy <= t.box[3]][:1]
            if pos:
                prep.positive_page, prep.page_tiles, prep.positives = page, page_tiles, pos
                # the model must see the answer: its tile replaces the weakest kept one if absent
                if not any(page_tiles[i] in kept for i in pos):
                    kept = (kept[:-1] if len(kept) > 1 else []) + [page_tiles[pos[0]]]
        prep.views = page_views(pages, kept, {}, self.backend.tile_px)
        return prep

    # -- losses ----------------------------------------------------------------------------
    def _end_id(self) -> int | None:
        ends = self.backend.eos_ids
        if ends:
            return int(ends[0])
        return getattr(self.tokenizer, "eos_token_id", None)

    def lm_loss(self, prep: Prepared) -> torch.Tensor:
        ex = prep.example
        inputs = self.backend.preprocess(ex.question, prep.views, self.template)
        inputs = self.backend.model_inputs(inputs)  # the family knows where its tensors sit
        answer_ids = self.tokenizer(" " + ex.answer.strip(), add_special_tokens=False)["input_ids"]
        end = self._end_id()
        if end is not None:
            answer_ids = answer_ids + [end]
        ans = torch.tensor([answer_ids], dtype=torch.long)
        device = self.model.get_input_embeddings().weight.device
        vision_dtype = next(self.tie.spec.vision(self.model).parameters()).dtype
        tensors = {}
        for k, v in inputs.items():
            if not isinstance(v, torch.Tensor):
                continue
            v = v.to(device)
            if k.startswith("pixel_values"):
                v = v.to(vision_dtype)
            tensors[k] = v
        ids = tensors["input_ids"]
        tensors["input_ids"] = torch.cat([ids, ans.to(device)], dim=1)
        for k, v in list(tensors.items()):  # per-token companions: attention mask 1, token types 0 (text)
            if k != "input_ids" and v.shape == ids.shape:
                fill = torch.ones_like if k == "attention_mask" else torch.zeros_like
                tensors[k] = torch.cat([v, fill(ans, device=device, dtype=v.dtype)], dim=1)
        labels = torch.full_like(tensors["input_ids"], -100)
        labels[:, ids.shape[1]:] = ans.to(device)
        with self.tie.condition(ex.question):
            out = self.model(**tensors, labels=labels, use_cache=False)
        return out.loss.float()

    def relevance_loss(self, prep: Prepared) -> torch.Tensor | None:
        spec = self.tie.spec
        if not prep.positives or spec.encode_overview is None:  # no box found / family not mapped yet
            return None
        with self.tie.condition(prep.example.question, record=True) as cond:
            _, grid = spec.encode_overview(self.model, self.backend.processor, tiles.overview(prep.positive_page), False)
        mass = patch_mass(cond.records, cond.mask)
        m = tile_masses(mass, prep.page_tiles, grid)
        q = m / m.sum().clamp(min=1e-12)
        return -torch.log(q[torch.tensor(prep.positives, device=q.device)].sum().clamp(min=1e-12))

    def loss(self, prep: Prepared) -> tuple[torch.Tensor, float, float | None]:
        lm = self.lm_loss(prep)
        rel = self.relevance_loss(prep) if self.opt.relevance_weight > 0 else None
        total = lm if rel is None else lm + self.opt.relevance_weight * rel
        return total, float(lm.detach()), None if rel is None else float(rel.detach())

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, examples: list[Example]) -> dict:
        if not examples:
            return {"examples": 0}
        lm, rel, hits, grounded = [], [], 0, 0
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            for ex in examples:
                prep = self.prepare(ex)
                lm.append(float(self.lm_loss(prep)))
                r = self.relevance_loss(prep)
                if r is not None:
                    rel.append(float(r))
                    grounded += 1
                    if self.scorer is not None:
                        s = self.scorer(ex.question, prep.page_tiles)
                        hits += int(max(range(len(s)), key=lambda i: s[i]) in prep.positives)
        self.model.train(was)
        return {
            "examples": len(examples),
            "lm_loss": round(sum(lm) / len(lm), 4),
            "relevance_loss": round(sum(rel) / len(rel), 4) if rel else None,
            "grounded": grounded,
            "visual_top1": round(hits / grounded, 4) if grounded and self.scorer else None,
            "visual_scorer": None if self.scorer is None else ("attention" if self.scorer.uses_attention else "cosine"),
        }

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, folder: Path, step: int, history: list) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.tie.config.trained_steps = step
        self.tie.save(folder)
        params = list(self.tie.parameters())
        tensors, steps = {}, {}
        for i, p in enumerate(params):
            st = self.optimizer.state.get(p)
            if st:
                tensors[f"{i}.exp_avg"] = st["exp_avg"].detach().float().cpu().contiguous()
                tensors[f"{i}.exp_avg_sq"] = st["exp_avg_sq"].detach().float().cpu().contiguous()
                steps[str(i)] = float(st["step"])
        save_file(tensors, str(folder / OPTIM_NAME))
        state = {"step": step, "history": history, "adam_steps": steps, "options": asdict(self.opt)}
        (folder / STATE_NAME).write_text(json.dumps(state) + "\n")

    def load_checkpoint(self, folder: Path) -> tuple[int, list]:
        from safetensors.torch import load_file

        state = json.loads((folder / STATE_NAME).read_text())
        loaded = Tie.load(folder, self.model, tokenizer=self.tokenizer)
        self.tie.adapters.load_state_dict(loaded.adapters.state_dict())
        loaded.detach()
        opt_state = load_file(str(folder / OPTIM_NAME))
        for i, p in enumerate(self.tie.parameters()):
            if f"{i}.exp_avg" in opt_state:
                self.optimizer.state[p] = {
                    "step": torch.tensor(state["adam_steps"][str(i)]),
                    "exp_avg": opt_state[f"{i}.exp_avg"].to(p.device, p.dtype),
                    "exp_avg_sq": opt_state[f"{i}.exp_avg_sq"].to(p.device, p.dtype),
                }
        return int(state["step"]), list(state["history"])

    # -- the loop ----------------------------------------------------------------------------
    def train(self, examples: list[Example], out: Path, progress: bool = True) -> dict:
        out = Path(out)
        train_set, held = split_heldout(examples, self.opt.heldout, self.opt.seed)
        if not train_set:
            raise UsageError("no training records left after the held-out split")
        total = self.opt.steps or self.opt.epochs * len(train_set)
        ckpt = out / CHECKPOINT_DIR
        step, history = 0, []
        if self.opt.resume and (ckpt / STATE_NAME).is_file():
            step, history = self.load_checkpoint(ckpt)
            self.say(f"resuming from {ckpt} at step {step}")
        before = self.evaluate(held) if held and step == 0 else None
        if self.opt.gradient_checkpointing:
            enable = getattr(self.model, "activation_checkpointing_enable", None) or getattr(
                self.model, "gradient_checkpointing_enable", None)
            if enable is not None:
                enable({"use_reentrant": False})
            self.tie.checkpointing = True
        self.model.train()
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, file=sys.stderr, disable=not progress, desc="tune", unit="step")
        prepared: dict[int, Prepared] = {}
        start = time.perf_counter()
        try:
            while step < total:
                epoch, pos = divmod(step, len(train_set))
                order = list(range(len(train_set)))
                random.Random(self.opt.seed * 1000003 + epoch).shuffle(order)
                i = order[pos]
                if i not in prepared:
                    prepared[i] = self.prepare(train_set[i])
                self.optimizer.zero_grad(set_to_none=True)
                loss, lm, rel = self.loss(prepared[i])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(self.tie.parameters()), 1.0)
                self.optimizer.step()
                step += 1
                history.append({"step": step, "loss": round(float(loss.detach()), 4), "lm": round(lm, 4),
                                "relevance": None if rel is None else round(rel, 4)})
                recent = history[-10:]
                bar.set_postfix(loss=f"{sum(h['loss'] for h in recent) / len(recent):.3f}")
                bar.update(1)
                if self.opt.checkpoint_every and step % self.opt.checkpoint_every == 0 and step < total:
                    self.save_checkpoint(ckpt, step, history)
        finally:
            bar.close()
            self.model.eval()
            self.tie.checkpointing = False
            disable = getattr(self.model, "activation_checkpointing_disable", None) or getattr(
                self.model, "gradient_checkpointing_disable", None)
            if disable is not None:
                disable()
        seconds = time.perf_counter() - start
        unfound = [p.example for p in prepared.values() if not p.positives]
        if unfound:
            self.say(f"{len(unfound)} of {len(prepared)} training answers were not found on their page "
                     f"(e.g. {unfound[0].doc}: {unfound[0].answer!r}); they trained the answer loss only. "
                     "Write answers as the document prints them")
        self.tie.config.trained_steps = step
        self.tie.save(out)
        after = self.evaluate(held) if held else None
        metrics = {
            "out": str(out),
            "base_model": self.tie.config.base_model,
            "steps": step,
            "train_examples": len(train_set),
            "heldout_examples": len(held),
            "answers_not_found": len(unfound),
            "seconds": round(seconds, 2),
            "first_loss": history[0]["loss"] if history else None,
            "last_loss": round(sum(h["loss"] for h in history[-10:]) / max(1, len(history[-10:])), 4) if history else None,
            "heldout_before": before,
            "heldout_after": after,
            "adapter_parameters": sum(p.numel() for p in self.tie.parameters()),
            "layers": self.tie.config.layers,
        }
        (out / METRICS_NAME).write_text(json.dumps({**metrics, "history": history}, indent=1) + "\n")
        return metrics


def tune(data: str | Path, backend: Backend, out: str | Path, options: TuneOptions,
         progress: bool = True, say: Callable[[str], None] | None = None) -> dict:
    """Read the records, make (or resume) adapters for ``backend``'s model, train, save, report."""
    examples = read_examples(data)
    out = Path(out)
    tokenizer = getattr(backend.processor, "tokenizer", backend.processor)
    ckpt = out / CHECKPOINT_DIR
    tie = Tie.create(backend.model, backend.name, tokenizer=tokenizer, every=options.every, seed=options.seed)
    if options.resume and (ckpt / STATE_NAME).is_file():
        saved = json.loads((ckpt / "tie_config.json").read_text())
        if saved.get("layers") != tie.config.layers:
            tie.detach()
            raise UsageError(f"{ckpt} was made with layers {saved.get('layers')}; pass the same --every or --no-resume")
    try:
        return Trainer(backend, tie, options, say).train(examples, out, progress)
    finally:
        tie.detach()
