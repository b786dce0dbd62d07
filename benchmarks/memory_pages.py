"""Peak memory of one question against the page count: flat past the prompt's image cap.

    python benchmarks/memory_pages.py [--pages 10,100,500,2000] [--dpi 50]

For each page count, a PDF of that many small text pages (``tests/make_hostile.py``, the
total on one page near the end) is answered by ``docq batch`` with a tiny random Idefics3
(built from a config, ``tests/_tiny_models.py``) on the CPU, one question, in a fresh
process; its peak resident memory (ru_maxrss) is printed with the tiles kept and the time.
Without the cap (``relevance/prompt_cap.py``), tiles kept grow with the pages and so do the renders
and the prompt; with it, tiles kept stop at the cap and memory stops growing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", default="10,100,500,2000")
    ap.add_argument("--dpi", default="50")
    args = ap.parse_args()
    from _tiny_models import build_idefics3
    from make_hostile import many_pages_pdf

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", NO_COLOR="1", OMP_NUM_THREADS="1")
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, dpi {args.dpi}")
    print("| pages | tiles total | tiles kept | peak RSS (MB) | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_idefics3(tmp / "tiny")
        qfile = tmp / "q.txt"
        qfile.write_text("What is the total due?\n")
        for n in map(int, args.pages.split(",")):
            pdf = many_pages_pdf(tmp / f"p{n}.pdf", pages=n, special=max(1, n * 3 // 4))
            out = tmp / f"p{n}.jsonl"
            cmd = [sys.executable, "-m", "docvqa_cli", "batch", str(qfile), str(pdf), "-o", str(out), "--model",
                   str(model), "--device", "cpu", "--max-new-tokens", "2", "--jobs", "1", "--dpi", args.dpi, "-q"]
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", _PEAK, *cmd], env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            peak_kb, rc = map(int, done.stdout.split()[-2:])
            row = json.loads(out.read_text().splitlines()[0]) if rc == 0 else {}
            print(f"| {n} | {row.get('tiles_total', '-')} | {row.get('tiles_kept', '-')} | {peak_kb // 1024} | "
                  f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
