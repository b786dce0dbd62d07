"""Loading a model as its family's backend, and the one place for the device, dtype and
quantisation policy. A model's ``config.json`` ``model_type`` picks the family
(``vlm/families/``, the registry).

Loading: a hub id or a local folder; with ``HF_HUB_OFFLINE=1`` only the local cache is
used. Weights are safetensors only; remote code runs only with ``trust_remote_code``.
Device ``auto`` takes CUDA when torch sees it. On CUDA the default is 4-bit NF4 (double
quantisation, compute in the model dtype) with the family's vision tower and projector kept
unquantised; ``int4`` (torchao int4 weight-only, whose decode transformers may compile),
``8bit`` and ``none`` are the alternatives. On the CPU nothing is quantised, and without
``--model`` a small model is used; one line on stderr says so.

The model dtype (``resolve_dtype``, ``--dtype auto``): on CUDA bf16 where the card supports
it, else fp16 (T4, RTX 20xx); on the CPU bf16 where the processor computes it natively
(AMX-BF16 or AVX512-BF16, or the Arm BF16 extension), else float32.

How torch's CPU threads wait is set before torch loads, by the command: ``vlm/threads.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from docvqa_cli.errors import EnvironmentProblem, UsageError
from docvqa_cli.options import DECODES, DEFAULT_CPU_MODEL, DEFAULT_MODEL, DEVICES, DTYPES, QUANTS
from docvqa_cli.vlm.base import Backend
from docvqa_cli.vlm.families import backend_for


# Questions per forward on the CPU. Measured on the 2-core dev machine with the tiny models
# (benchmarks/RESULTS.md, "GPU speed"): batching helps a CPU little beyond filling its
# cores, padding costs, and a record waits for its whole batch; 4 is the middle of 1..8.
CPU_BATCH_SIZE = 4
# The most questions per forward on CUDA: memory decides below it (``default_batch_size``);
# beyond it a record waits long for its batch, and a ~2-4B model already fills an H100/H200.
MAX_BATCH_SIZE = 64
# --decode auto compiles (static cache) only for runs of at least this many questions: about
# 9 s of compilation (H200, transformers 5.24) against tens of ms saved per question.
STATIC_MIN_QUESTIONS = 16
GPU_MEMORY_SHARE = 0.6  # of the free GPU memory, for the KV caches and activations of a batch
INT4_GROUP_SIZE = 128  # torchao int4 weight-only: weights share a scale per 128 inputs
# /proc/cpuinfo flags of a CPU that computes bf16 natively (x86 AMX / AVX512, Arm).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

def _say(line: str) -> None:
    print(f"docq: {line}", file=sys.stderr)


def resolve_device(device: str) -> str:
    """'cuda', 'cuda:N' or 'cpu' for --device auto|cuda|cuda:N|cpu."""
    kind, colon, index = device.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"--device must be one of {', '.join(DEVICES)} or cuda:N, not {device!r}")
    import torch

    has_cuda = torch.cuda.is_available()
    if kind == "cuda" and not has_cuda:
        raise EnvironmentProblem(
            "--device cuda: torch sees no CUDA GPU; install a CUDA build of torch (https://pytorch.org) "
            "or use --device cpu"
        )
    if colon and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise EnvironmentProblem(f"--device {device}: torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
                                 f"(cuda:0 to cuda:{count - 1}); check CUDA_VISIBLE_DEVICES")
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


def resolve_quant(quant: str, device: str) -> str:
    """'4bit', 'int4', '8bit' or 'none': auto is 4bit on CUDA, none on the CPU."""
    if quant not in QUANTS:
        raise UsageError(f"--quant must be one of {', '.join(QUANTS)}, not {quant!r}")
    if quant == "auto":
        return "4bit" if device.startswith("cuda") else "none"
    if device == "cpu" and quant == "int4":
        raise EnvironmentProblem("--quant int4 needs a CUDA GPU (torchao's int4 kernels); on the CPU use --quant none")
    if device == "cpu" and quant != "none":
        raise UsageError(f"--quant {quant} needs --device cuda (bitsandbytes); on the CPU use --quant none")
    return quant


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively: torch's CPU capabilities where it reports them,
    else the flags of ``/proc/cpuinfo`` (``cpuinfo``: that file's text, for tests)."""
    if cpuinfo is None:
        try:
            import torch

            caps = torch.cpu.get_capabilities()
            return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
        except Exception:  # noqa: BLE001 - an older torch: read the flags
            pass
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return any(f in flags for f in CPU_BF16_FLAGS)


def cuda_has_bf16(device: str = "cuda") -> bool:
    """Whether the CUDA card ``device`` computes bf16 (compute capability 8.0+: A100, RTX 30xx on)."""
    import torch

    try:
        index = torch.device(device).index
        if index is None:
            return bool(torch.cuda.is_bf16_supported())
        with torch.cuda.device(index):
            return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def resolve_dtype(dtype: str, device: str):
    """The model's torch dtype for --dtype auto|bfloat16|float16|float32 on ``device``
    ('cuda' or 'cpu'): auto is bf16 on a CUDA card with bf16, else fp16; on the CPU bf16 where
    the processor computes it natively, else float32."""
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if cuda_has_bf16(device) else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def quantization_config(quant: str, keep_unquantized: tuple[str, ...] = (), dtype=None):
    """The transformers quantisation config for ``quant`` (None for none): bitsandbytes for
    4bit (NF4, computing in ``dtype``) and 8bit, torchao for int4; raises EnvironmentProblem
    when the package is missing.

    ``keep_unquantized`` are full module-name prefixes (``model.vision_model``): in
    transformers 5 ``llm_int8_skip_modules`` and ``modules_to_not_convert`` match from the
    start of a module's name.
    """
    if quant == "none":
        return None
    if quant == "int4":
        return int4_config(keep_unquantized, dtype)
    for package in ("bitsandbytes", "accelerate"):
        try:
            importlib.import_module(package)
        except Exception:
            raise EnvironmentProblem(
                f"{package} missing for --quant {quant}: `pip install {package}` or use --quant none"
            ) from None
    import torch
    from transformers import BitsAndBytesConfig

    skip = list(keep_unquantized) or None
    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or torch.bfloat16,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def int4_config(keep_unquantized: tuple[str, ...] = (), dtype=None):
    """torchao int4 weight-only (groups of INT4_GROUP_SIZE, tinygemm's tile-packed layout, which
    needs bf16 and a card of compute capability 8.0+) as a ``TorchAoConfig``. Unlike
    bitsandbytes, transformers may compile its decode step (the static cache's graph)."""
    import torch

    try:
        import torchao  # noqa: F401
        from torchao.quantization import Int4WeightOnlyConfig
    except Exception as exc:  # noqa: BLE001 - missing, or built for another torch
        raise EnvironmentProblem(
            f"torchao missing for --quant int4 ({_first_line(exc)}): `pip install torchao` (0.18 pairs with "
            "torch 2.11+) or use --quant 4bit"
        ) from None
    if dtype is not None and dtype != torch.bfloat16:
        raise EnvironmentProblem(
            f"--quant int4 computes in bfloat16 only (torchao's int4 kernels), not {str(dtype).replace('torch.', '')}; "
            "this card lacks bf16 (compute capability < 8.0): use --quant 4bit"
        )
    from transformers import TorchAoConfig

    quant_type = Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d")
    return TorchAoConfig(quant_type=quant_type, modules_to_not_convert=list(keep_unquantized) or None)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached(name: str) -> bool:
    """Whether the hub model ``name`` is already in the local cache (config and weights), so
    it loads without the network: a machine that lost its connection still runs."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    config = try_to_load_from_cache(name, "config.json")
    if not isinstance(config, str):
        return False
    return any(isinstance(try_to_load_from_cache(name, f), str)
               for f in ("model.safetensors", "model.safetensors.index.json"))


def _looks_like_path(name: str) -> bool:
    """A folder the user meant (not a hub id, which is ``owner/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load_config(name: str, trust_remote_code: bool, local_only: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UsageError(
                f"--model {name}: the model needs its own code from the hub; pass --trust-remote-code "
                "only if you trust its author"
            ) from None
        if "model_type" in str(exc) or "Unrecognized" in str(exc):
            raise UsageError(f"--model {name}: transformers does not know this model's type ({_first_line(exc)})") from None
        raise
    except OSError as exc:
        if Path(name).exists():
            raise UsageError(f"--model {name}: not a model folder (no readable config.json)") from None
        if local_only:
            raise EnvironmentProblem(
                f"--model {name}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1; download it once "
                f"with `docq models pull {name}` (or unset HF_HUB_OFFLINE)"
            ) from None
        raise EnvironmentProblem(
            f"--model {name}: cannot fetch it from the hub ({_first_line(exc)}); on a machine without the "
            f"network, run `docq models pull {name}` elsewhere, copy the cache here and set HF_HUB_OFFLINE=1") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _auto_model(name: str, **kwargs):
    """The default model loader; a family may define a ``load_model`` classmethod instead."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(name, **kwargs)


def _auto_processor(name: str, **kwargs):
    """The default processor loader; a family may define a ``load_processor`` classmethod instead."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(name, **kwargs)


def _quiet_transformers() -> None:
    """transformers' download and weight-loading bars only on a terminal; its warnings only
    when they are errors (docq says what matters itself). stdout is never touched."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry notes; docq says what failed
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()


def load_backend(
    model: str | None = None,
    device: str = "auto",
    quant: str = "auto",
    trust_remote_code: bool = False,
    say: Callable[[str], None] = _say,
    decode: str = "auto",
    dtype: str = "auto",
) -> Backend:
    """Load ``model`` (hub id or folder; None = the default for the device) as its family's backend.
    ``decode`` (auto|plain|static) is how it decodes (``resolve_decode``); ``dtype``
    (auto|bfloat16|float16|float32) the weights' and activations' dtype (``resolve_dtype``)."""
    device = resolve_device(device)
    decode = resolve_decode(decode, device)
    quant = resolve_quant(quant, device)
    torch_dtype = resolve_dtype(dtype, device)
    if model is None:
        model = DEFAULT_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL
        if device == "cpu":
            say(f"no CUDA GPU: running {model} on the CPU, unquantised (slow; --model to choose another)")
    _quiet_transformers()
    if not Path(model).is_dir() and (_looks_like_path(model) or Path(model).exists()):
        raise UsageError(f"--model {model}: no such model folder")
    local_only = _offline() or Path(model).is_dir() or _cached(model)
    config = _load_config(model, trust_remote_code, local_only)
    backend_cls = backend_for(getattr(config, "model_type", ""), model)

    import torch

    if device == "cpu":  # nothing quantised: refuse a model the free RAM cannot hold, before loading it
        from docvqa_cli.vlm.memory import check_fits

        check_fits(config, torch_dtype, model, smaller=DEFAULT_CPU_MODEL)
    qconfig = quantization_config(quant, tuple(getattr(backend_cls, "keep_unquantized", ())), torch_dtype)
    kwargs = dict(
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        local_files_only=local_only,
        dtype=torch_dtype,
    )
    if device.startswith("cuda"):
        kwargs.update(device_map={"": torch.device(device).index or 0})
        if qconfig is not None:
            kwargs["quantization_config"] = qconfig
    try:
        load_model = getattr(backend_cls, "load_model", None) or _auto_model
        load_processor = getattr(backend_cls, "load_processor", None) or _auto_processor
        net = load_model(model, **kwargs)
        processor = load_processor(model, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except OSError as exc:
        text = str(exc)
        if "safetensors" in text or ".bin" in text or "pytorch_model" in text:
            raise UsageError(f"--model {model}: no safetensors weights (docq loads safetensors only)") from None
        raise EnvironmentProblem(f"--model {model}: cannot load it ({_first_line(exc)})") from None
    except ImportError as exc:
        raise EnvironmentProblem(f"--model {model}: {_first_line(exc)}") from None
    net.eval()
    backend = backend_cls(net, processor, model, torch.device(device))
    backend.decode = decode
    return backend


def resolve_decode(decode: str, device, questions: int | None = None) -> str:
    """'plain' or 'static' for --decode auto|plain|static: auto is static on CUDA, plain on the CPU
    (the static cache is compiled by transformers on CUDA only; on the CPU it only pads), and
    plain for a run of fewer than STATIC_MIN_QUESTIONS ``questions`` (a one-shot ``docq ask``:
    compiling takes seconds that a few questions never win back)."""
    if decode not in DECODES:
        raise UsageError(f"--decode must be one of {', '.join(DECODES)}, not {decode!r}")
    kind = getattr(device, "type", None) or str(device).partition(":")[0]
    if decode == "auto":
        few = questions is not None and questions < STATIC_MIN_QUESTIONS
        return "static" if kind == "cuda" and not few else "plain"
    return decode


def question_bytes(backend: Backend, max_new_tokens: int = 48, images: int = 13) -> int:
    """A rough upper estimate of the GPU memory one question of a batch needs: its KV cache
    (prompt of ``images`` images plus text, and the new tokens), the language model's
    activations over the prompt at prefill, the vision encoder's over its images, and the
    logits kept per new token."""
    config = backend.model.config
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    hidden = int(getattr(text, "hidden_size", 2048))
    layers = int(getattr(text, "num_hidden_layers", 24))
    heads = int(getattr(text, "num_attention_heads", 16))
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    inter = int(getattr(text, "intermediate_size", 4 * hidden))
    vocab = int(getattr(text, "vocab_size", 50000))
    tokens = images * int(backend.image_tokens_per_image) + 300 + max_new_tokens
    kv = 2 * layers * kv_heads * head_dim * 2 * tokens
    prefill = tokens * (4 * hidden + 2 * inter) * 2
    vision_bytes = 0
    if vision is not None:
        vh = int(getattr(vision, "hidden_size", 1024))
        vi = int(getattr(vision, "intermediate_size", 4 * vh))
        patches = backend.patches_per_image_token() * int(backend.image_tokens_per_image)  # before merging
        vision_bytes = images * patches * (4 * vh + 2 * vi) * 2
    logits = max_new_tokens * vocab * 4
    return int(kv + prefill + vision_bytes + logits)


def default_batch_size(backend: Backend, max_new_tokens: int = 48) -> int:
    """Questions per forward: on CUDA as many as GPU_MEMORY_SHARE of the free memory holds by
    ``question_bytes`` (1..MAX_BATCH_SIZE); CPU_BATCH_SIZE on the CPU."""
    kind = getattr(backend.device, "type", str(backend.device))
    if kind != "cuda":
        return CPU_BATCH_SIZE
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(backend.device)
    except Exception:  # noqa: BLE001 - no reading: the safe side
        return 1
    per = max(1, question_bytes(backend, max_new_tokens))
    return max(1, min(MAX_BATCH_SIZE, int(free * GPU_MEMORY_SHARE // per)))
