#!/usr/bin/env bash
# One short device command for issue 8 (GPU speed): CUDA tests, then gpu_bench.py for the
# default architectures, a short table at the end; about 8 minutes on an H100 / H200.
#
# Prepare HERE (the dev machine, with internet to PyPI), once, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   bash benchmarks/gpu_run.sh prepare
# which runs (the download command from /work/.library/device/README.md):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d .whl \
#     bitsandbytes==0.50.2 pymupdf==1.28.2 transformers==5.24.0
# and trims the bitsandbytes wheel to its cpu and cuda130 libraries (43 MB -> ~4 MB: the other
# .so files and their RECORD lines removed, re-zipped). transformers 5.24.0 replaces the image's
# 5.17.0 (docq is developed on 5.24; its huggingface_hub 1.33 and tokenizers 0.23.2 fit it).
#
# Then on the device (device tool `run`, carry [".whl"], timeout_s 600):
#   bash benchmarks/gpu_run.sh
# Files land in $OUT (bench-*.json, logs). Knobs: ARCHS, BATCH_SIZES, QUESTIONS, BENCH_TIMEOUT, QUANT.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
  set -e
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d .whl \
    bitsandbytes==0.50.2 pymupdf==1.28.2 transformers==5.24.0
  python3 - <<'PY'
import glob, os, zipfile
for path in glob.glob(".whl/bitsandbytes-*.whl"):
    src = zipfile.ZipFile(path)
    keep = lambda n: not n.endswith(".so") or n.endswith(("_cpu.so", "_cuda130.so"))
    names = [n for n in src.namelist() if keep(n)]
    if len(names) == len(src.namelist()):
        continue
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for n in names:
            data = src.read(n)
            if n.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True) if keep(l.split(",")[0])).encode()
            dst.writestr(n, data)
    src.close()
    os.replace(tmp, path)
    print(f"trimmed {path}: {os.path.getsize(path) / 2**20:.1f} MiB")
PY
  ls -la .whl
  exit 0
fi

OUT="${OUT:-/tmp/docq-gpu-out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
start=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || { echo "wheel install failed"; exit 3; }
else
  export PYTHONPATH=$PWD
  echo "no .whl folder: using the image's packages (no bitsandbytes / pymupdf there: tests will skip or fail)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"

echo "== pytest -m cuda"
timeout 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_vlm_cuda.py tests/test_batching.py 2>&1 \
  | tee "$OUT/pytest-cuda.log" | tail -15

ARCHS="${ARCHS:-smolvlm-instruct qwen3-vl-4b}"
for arch in $ARCHS; do
  left=$(( 540 - ($(date +%s) - start) ))
  limit=$(( left < ${BENCH_TIMEOUT:-240} ? left : ${BENCH_TIMEOUT:-240} ))
  if [ "$limit" -lt 60 ]; then echo "== $arch: skipped (${left}s left)"; continue; fi
  echo "== gpu_bench $arch (limit ${limit}s)"
  timeout "$limit" python3 benchmarks/gpu_bench.py --arch "$arch" --device cuda --quant "${QUANT:-none}" \
    --decodes plain,static --batch-sizes "${BATCH_SIZES:-8,16,32}" --questions "${QUESTIONS:-32}" \
    --runs 2 --warmup 1 --json "$OUT/bench-$arch.json" 2>&1 | grep -v -i "warn\|shards\|Loading weights" \
    | tee "$OUT/bench-$arch.log"
done
echo "== done in $(( $(date +%s) - start )) s"
