"""Will the model fit in RAM? An estimate from its config and dtype, checked before loading.

``model_bytes`` counts the parameters of the model the config describes (built on the
``meta`` device: no memory, no weights read) times the bytes of the dtype. Loading and one
question need more than the weights: ``LOAD_FACTOR`` and ``OVERHEAD_BYTES`` are measured on
the real Qwen3-VL-4B config on the CPU (peaks of 10.4 GB in bf16 and 20.6-23.2 GB in float32,
with 8.9 and 17.8 GB of weights). ``available_bytes`` is the RAM this process may still
take: ``MemAvailable`` of ``/proc/meminfo``, lowered by a cgroup (container) limit, or the
``DOCQ_MEMORY_LIMIT`` environment variable (``6GB``, ``512MB`` or bytes) where it is set.
``check_fits`` raises ``EnvironmentProblem`` (exit 3) naming a smaller model or ``--dtype``
when the estimate is over; it says nothing where the free RAM cannot be read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from docvqa_cli.errors import EnvironmentProblem, UsageError

LIMIT_ENV = "DOCQ_MEMORY_LIMIT"
LOAD_FACTOR = 1.2  # peak RAM while loading and answering, per byte of weights
OVERHEAD_BYTES = 600 * 2**20  # torch, transformers, PyMuPDF and one page's images
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30,
          "t": 2**40, "tb": 2**40}


def parameter_count(config) -> int:
    """Parameters of the model ``config`` describes (its family's image-text-to-text class)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


def dtype_bytes(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def model_bytes(config, dtype, params: int | None = None) -> int:
    """Estimated peak RAM for loading the model in ``dtype`` and answering one question."""
    params = parameter_count(config) if params is None else params
    return int(params * dtype_bytes(dtype) * LOAD_FACTOR + OVERHEAD_BYTES)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"{LIMIT_ENV}={text!r}: give a size such as 6GB, 512MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit still allows (None without one)."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """RAM this process may still take (None if unknown): ``DOCQ_MEMORY_LIMIT`` if set, else
    ``MemAvailable`` capped by a container's limit."""
    given = os.environ.get(LIMIT_ENV, "").strip()
    if given:
        return parse_size(given)
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    if room is not None:
        free = room if free is None else min(free, room)
    return free


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(config, dtype, model: str, smaller: str | None = None) -> None:
    """Refuse (EnvironmentProblem, exit 3) a model whose estimate is over the free RAM, naming
    what to do: a lower ``--dtype`` where that fits, else ``smaller`` (a model name)."""
    import torch

    free = available_bytes()
    if free is None:
        return
    params = parameter_count(config)
    need = model_bytes(config, dtype, params)
    if need <= free:
        return
    name = str(dtype).replace("torch.", "")
    fixes = []
    if dtype == torch.float32:
        half = model_bytes(config, torch.bfloat16, params)
        if half <= free:
            fixes.append(f"--dtype bfloat16 (about {_gb(half)})")
    if smaller and smaller != model:
        fixes.append(f"a smaller model (--model {smaller})")
    fixes.append("more free memory")
    raise EnvironmentProblem(
        f"--model {model}: needs about {_gb(need)} of RAM in {name} ({params / 1e9:.2f}B parameters), "
        f"only {_gb(free)} is free; use {' or '.join(fixes)}"
    )
