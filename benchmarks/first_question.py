"""The first hour's numbers (issue 15): how long one `docq ask` question takes on the CPU with
a real-size SmolVLM-256M (random weights built from the real config, so the same size and
compute as the hub's checkpoint), and how fast an offline `docq ask` with nothing cached
gives up.

    python benchmarks/first_question.py [--models ../shared/models] [--runs 2]

Each run is a whole `docq ask` process (model load included, as a user runs it); the script
prints wall and CPU seconds per run from the operating system's accounting of the child.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def timed(cmd: list[str], env: dict) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit code, last stderr line) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return wall, cpu, proc.returncode, last


def build_full_size(models: Path, out: Path) -> Path:
    """SmolVLM-256M-Instruct at its real size (bf16 safetensors, 513 MB), random weights."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    src = models / "SmolVLM-256M-Instruct"
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(src)).to(torch.bfloat16).eval()
    model.save_pretrained(out, safe_serialization=True)
    for f in src.iterdir():
        if f.name not in ("config.json", "README.md") and f.is_file():
            shutil.copyfile(f, out / f.name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--doc", default=str(ROOT / "sample_docs" / "invoice.pdf"))
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    docq = [sys.executable, "-m", "docvqa_cli"]

    with tempfile.TemporaryDirectory() as tmp:
        empty = dict(env, HF_HOME=str(Path(tmp) / "hf"), HF_HUB_OFFLINE="1")
        for _ in range(args.runs):
            wall, cpu, code, last = timed([*docq, "ask", args.doc, "What is the total amount?", "--device", "cpu"],
                                          empty)
            print(f"offline ask, nothing cached: exit {code}, {wall:.2f} s wall, {cpu:.2f} s CPU: {last[:90]}...")
        if not (args.models / "SmolVLM-256M-Instruct" / "config.json").is_file():
            sys.exit(f"{args.models}: no SmolVLM-256M-Instruct metadata; pass --models")
        t0 = time.perf_counter()
        model = build_full_size(args.models, Path(tmp) / "smolvlm-256m")
        size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        print(f"built {model.name}: {size:,} bytes of safetensors in {time.perf_counter() - t0:.0f} s")
        for _ in range(args.runs):
            wall, cpu, code, last = timed([*docq, "ask", args.doc, "What is the total amount?", "-m", str(model),
                                           "--device", "cpu"], env)
            print(f"docq ask, 1 question, real-size SmolVLM-256M on the CPU: exit {code}, {wall:.1f} s wall, "
                  f"{cpu:.1f} s CPU (threads: {os.environ.get('OMP_NUM_THREADS', 'all cores')})")


if __name__ == "__main__":
    main()
