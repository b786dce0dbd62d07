"""Model files on this machine: the Hugging Face cache, whether a model is ready in it,
fetching models ahead (``docq models pull``), listing them (``docq models list``), and
``require``, the check every command that loads a model runs before any document work.

A model is *ready* when it is a folder with a ``config.json``, or when the cache holds its
``config.json`` and all its safetensors weights. ``require`` never waits on the network
for long: a model that is not ready fails at once with ``HF_HUB_OFFLINE`` set, and after
one short request (``HUB_TIMEOUT``) when the hub cannot be reached, each time with the
exact steps (pull elsewhere, copy the cache or a folder, ``HF_HUB_OFFLINE=1``).

The cache folder follows the hub's own rules, read when called: ``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from docvqa_cli.errors import EnvironmentProblem, UsageError
from docvqa_cli.options import DEFAULT_CPU_MODEL, DEFAULT_MODEL, ModelOptions

# What `docq models pull` fetches: safetensors weights, configs, tokenizer and chat template.
# Never pickled weights (*.bin, *.pt): docq loads safetensors only.
PULL_PATTERNS = ("*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken")
HUB_TIMEOUT = 4.0  # seconds for the one request that asks the hub whether a model can be fetched
TRUTHY = ("1", "true", "yes", "on")
DEFAULT_FOR = {DEFAULT_MODEL: "cuda", DEFAULT_CPU_MODEL: "cpu"}


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (1, true, yes, on; any case), as the hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUTHY


def cache_dir() -> str:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def default_model(device: str) -> str:
    """The model docq loads without --model on ``device`` (cuda, cuda:N or cpu)."""
    return DEFAULT_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL


def is_folder(name: str) -> bool:
    """A folder the user meant (not a hub id, which is ``owner/name``)."""
    return Path(name).is_dir() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _snapshot(name: str, cache: str) -> Path | None:
    """The cached snapshot folder of hub model ``name`` (its ``main`` ref, else the newest)."""
    repo = Path(cache) / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if (repo / "snapshots").is_dir() else []
    return snaps[-1] if snaps else None


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks to load offline: config.json and its safetensors weights
    (every shard an index names); [] when it is complete."""
    if not (folder / "config.json").is_file():
        return ["config.json"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError):
            return [index.name + " (unreadable)"]
        return [s for s in shards if not (folder / s).is_file()]
    if (folder / "model.safetensors").is_file():
        return []
    return ["model.safetensors"]


def is_cached(name: str, cache: str | None = None) -> bool:
    """Whether hub model ``name`` is complete in the cache (loads without the network)."""
    snap = _snapshot(name, cache or cache_dir())
    return snap is not None and not missing_files(snap)


def _remedy(name: str, why: str) -> str:
    return (f"--model {name}: not on this machine ({why}). Where there is a network, run "
            f"`docq models pull {name}`, then copy that machine's Hugging Face cache into {cache_dir()} here "
            f"(or copy the model's folder and pass --model DIR) and run with HF_HUB_OFFLINE=1")


def resolve_name(model: ModelOptions) -> str:
    """The model a command will load: --model, else the base model of --tie's adapters, else
    the default for the device (resolving ``auto`` imports torch)."""
    if model.model:
        return model.model
    if model.tie:
        from docvqa_cli.vlm import tie

        return tie.read_config(model.tie).base_model
    return default_model(_device(model.device))


def _device(device: str) -> str:
    """``vlm.load.resolve_device``, without importing torch (seconds) where the answer is
    plain: an explicit cpu, or auto on a machine with no NVIDIA device node (Linux
    /dev/nvidia*, WSL /dev/dxg), where torch cannot see a GPU either."""
    if device == "cpu" or (device == "auto" and not _gpu_nodes()):
        return "cpu"
    from docvqa_cli.vlm.load import resolve_device

    return resolve_device(device)


def _gpu_nodes() -> bool:
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")) or sys.platform not in ("linux", "darwin")


def require(model: ModelOptions) -> str:
    """Before any document work: the model can be loaded, from a folder, from the cache, or
    from a hub that answers now; otherwise a UsageError (a bad folder) or an
    EnvironmentProblem (exit 3) that says how to get it here. Returns the model's name."""
    name = resolve_name(model)
    if is_folder(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UsageError(f"--model {name}: no such model folder")
        if not (folder / "config.json").is_file():
            raise UsageError(f"--model {name}: not a model folder (no config.json)")
        return name  # its weights and family are the loader's to check
    if is_cached(name):
        return name
    if offline():
        raise EnvironmentProblem(_remedy(name, f"not in the cache {cache_dir()}, and HF_HUB_OFFLINE is set; "
                                               "unset it to download the model now"))
    reach_hub(name)
    return name


def reach_hub(name: str, pulling: bool = False) -> dict:
    """One short request for ``name``'s file list: its metadata, or an error that says what
    to do (the hub unreachable, or no such model)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{endpoint()}/api/models/{name}/revision/main?blobs=true")
    token = _token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise UsageError(f"--model {name}: the hub has no such model, or it needs a login (`hf auth login`); "
                             "check the name on huggingface.co") from None
        raise EnvironmentProblem(_remedy(name, f"the hub {endpoint()} answered HTTP {exc.code}")) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a garbled answer
        cause = getattr(exc, "reason", None) or exc
        if pulling:
            raise EnvironmentProblem(f"{name}: the hub {endpoint()} cannot be reached ({cause}); pull it on a "
                                     "machine that has the network and copy its Hugging Face cache here") from None
        raise EnvironmentProblem(_remedy(name, f"not in the cache {cache_dir()}, and the hub {endpoint()} cannot "
                                               f"be reached: {cause}")) from None


def _token() -> str | None:
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


# --- docq models pull / list --------------------------------------------------------------------

@dataclass(frozen=True)
class Cached:
    """One model in the cache, for ``docq models list``."""

    name: str
    size: int  # bytes on disk
    complete: bool  # loads offline
    default_for: str  # "cuda", "cpu" or ""
    path: str


def pull(name: str, progress: bool = True) -> str:
    """Download hub model ``name`` into the cache: ``PULL_PATTERNS`` only; a download that was
    cut off resumes where it stopped. Returns the snapshot folder."""
    if offline():
        raise EnvironmentProblem("docq models pull needs the network: unset HF_HUB_OFFLINE (it is set)")
    if is_folder(name):
        raise UsageError(f"{name}: a folder is already on this machine; pull takes hub ids such as {DEFAULT_CPU_MODEL}")
    info = reach_hub(name, pulling=True)
    files = [s.get("rfilename", "") for s in info.get("siblings", [])]
    if not any(f.endswith(".safetensors") for f in files):
        raise UsageError(f"{name}: the hub has no safetensors weights for it (docq loads safetensors only)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        path = snapshot_download(name, allow_patterns=list(PULL_PATTERNS), cache_dir=cache_dir(),
                                 endpoint=endpoint())
    except OSError as exc:
        raise EnvironmentProblem(f"{name}: the download stopped ({str(exc).strip().splitlines()[0]}); run the "
                                 "same command again to resume") from None
    lacking = missing_files(Path(path))
    if lacking:
        raise EnvironmentProblem(f"{name}: downloaded, but {', '.join(lacking)} is missing; run the same command "
                                 "again to resume")
    return path


def folder_size(folder: Path) -> int:
    """Bytes on disk under ``folder``, each file counted once (the cache's snapshot links
    point at its blobs)."""
    seen: set[str] = set()
    for root, _, files in os.walk(folder):
        for f in files:
            real = os.path.realpath(os.path.join(root, f))
            if os.path.isfile(real):
                seen.add(real)
    return sum(os.path.getsize(p) for p in seen)


def cached(cache: str | None = None) -> list[Cached]:
    """Every model in the cache, the defaults first, then by name."""
    cache = cache or cache_dir()
    found = []
    for repo in sorted(Path(cache).glob("models--*")) if Path(cache).is_dir() else []:
        name = repo.name[len("models--"):].replace("--", "/", 1)
        snap = _snapshot(name, cache)
        found.append(Cached(name, folder_size(repo), snap is not None and not missing_files(snap),
                            DEFAULT_FOR.get(name, ""), str(snap or repo)))
    return sorted(found, key=lambda c: (c.default_for == "", c.name))


def human(size: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1000, as the hub shows sizes)."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
