#!/usr/bin/env bash
# The one device command for issue 13 (GPU speed): every GPU goal measured in one call of at
# most 9 minutes on one H200, with no internet and at most 64 MiB of carried files.
#
# Steps, in this order, each capped by the time left (a step that would start with less than
# its minimum is skipped and says so; what it measured before a cap is kept):
#   1. pytest -m cuda (the CUDA tests: 4-bit and int4 loading, compiled static decode);
#   2. SmolVLM-Instruct architecture (Idefics3, 2.25B) in bf16: batch-1 latency, keep 0.5 vs
#      1.0 throughput, share of the compute floor, peak memory (static decode: compiled);
#   3. Qwen3-VL-4B (docq's default model) in NF4, docq's default loading: batch 1 and 8 at
#      keep 0.5, latency and peak memory (goal < 8 GiB);
#   4. SmolVLM-Instruct in int4 (torchao; compiled decode) and 5. in NF4 (plain decode: not
#      compilable), the same rows as 2.
# Every row is printed and appended to $OUT/bench-*.jsonl as soon as it is measured; each
# bench ends with `gpu <arch> <quant> b1_ms=.. ratio_0.5=.. floor_share=.. peak_gib=..`, and
# the script ends by printing those lines together.
#
# Prepare HERE (the dev machine, with PyPI), once, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   bash benchmarks/gpu_run.sh prepare
# which downloads (the command from /work/.library/device/README.md) bitsandbytes 0.50.2
# (trimmed to its cpu and cuda130 libraries: 43 MB -> ~4 MB), pymupdf 1.28.2 (no
# dependencies), transformers 5.24.0 (docq's development version; the image has 5.17) and
# torchao 0.18.0 (int4; built for torch >= 2.11, the image's torch), ~40 MB in all.
#
# Then on the device (device tool `run`, carry [".whl"], timeout_s 600):
#   bash benchmarks/gpu_run.sh
# Dry run anywhere (CPU, tiny models, small sizes; every step end to end, quant none):
#   bash benchmarks/gpu_run.sh dry
# Knobs: BUDGET (s, default 540), OUT.
set -u
cd "$(dirname "$0")/.."

WHEELS="bitsandbytes==0.50.2 pymupdf==1.28.2 transformers==5.24.0 torchao==0.18.0"

if [ "${1:-}" = "prepare" ]; then
  set -e
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d .whl \
    $WHEELS
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
  du -ch .whl/*.whl | tail -1
  exit 0
fi

DRY=0; SCALE=1
[ "${1:-}" = "dry" ] && { DRY=1; SCALE=${SCALE_DRY:-10}; }
OUT="${OUT:-/tmp/docq-gpu-out}"; mkdir -p "$OUT"
BUDGET="${BUDGET:-540}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }

if [ "$DRY" = 1 ]; then
  PY=python; export PYTHONPATH=$PWD
  echo "== dry run: CPU, tiny models, quant none"
elif ls .whl/*.whl >/dev/null 2>&1; then
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || { echo "wheel install failed"; exit 3; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  PY=python3; export PYTHONPATH=$PWD
  echo "no .whl folder: the image's packages only (no bitsandbytes, pymupdf or torchao: those steps fail)"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"

# step NAME MIN_SECONDS CAP_SECONDS COMMAND...: run under min(CAP, time left), or skip
# (a dry run on a slow CPU stretches the caps by SCALE).
step() {
  local name=$1 min=$2 cap=$(( $3 * SCALE )); shift 3
  local l; l=$(left)
  local limit=$(( l < cap ? l : cap ))
  if [ "$limit" -lt "$min" ]; then echo "== $name: skipped (${l}s left, needs ${min}s)"; return; fi
  echo "== $name (limit ${limit}s, ${l}s left)"
  timeout "$limit" "$@" 2>&1 | grep -v -i "warn\|shards\|Loading weights" | tee "$OUT/$name.log"
}

# bench NAME ARCH QUANT EXTRA...: sets CMD to gpu_bench (its own --time-limit inside the step's cap)
bench() {
  local name=$1 arch=$2 quant=$3; shift 3
  local device=cuda
  if [ "$DRY" = 1 ]; then
    device=cpu; quant=none
    case $arch in smolvlm-instruct) arch=tiny-idefics3;; qwen3-vl-4b) arch=tiny-qwen3-vl;; esac
  fi
  CMD=($PY benchmarks/gpu_bench.py --arch "$arch" --device "$device" --quant "$quant" --json "$OUT/bench-$name.jsonl" "$@")
  [ "$DRY" = 1 ] && CMD+=(--time-limit 100000)  # the last --time-limit wins: the step's cap rules
}

if [ "$DRY" = 1 ]; then
  Q=4; SIZES=2,4; RUNS="--runs 1 --warmup 0"; NEW="--new-tokens 4"; SMOL="$OUT/tiny-idefics3"
else  # batch 1 is its own row; each static (compiled) shape compiles once, in the warm-up
  Q=32; SIZES=8,32; RUNS="--runs 2 --warmup 1"; NEW="--new-tokens 16"; SMOL=/tmp/smolvlm-instruct
fi

step pytest-cuda 30 75 $PY -m pytest -q -m cuda -p no:cacheprovider tests/test_vlm_cuda.py tests/test_batching.py \
  tests/test_vlm_qwen.py tests/test_gpu_path.py
bench smolvlm-bf16 smolvlm-instruct none --decodes static --keeps 1.0,0.5 --batch-sizes "$SIZES" --questions "$Q" \
  $RUNS $NEW --model-dir "$SMOL" --time-limit 150
step smolvlm-bf16 90 170 "${CMD[@]}"
bench qwen3-nf4 qwen3-vl-4b 4bit --decodes plain --keeps 0.5 --batch-sizes 8 --questions 8 $RUNS $NEW --time-limit 100
step qwen3-nf4 60 120 "${CMD[@]}"
bench smolvlm-int4 smolvlm-instruct int4 --decodes static --keeps 1.0,0.5 --batch-sizes "$SIZES" --questions "$Q" \
  $RUNS $NEW --model-dir "$SMOL" --time-limit 90
step smolvlm-int4 60 110 "${CMD[@]}"
bench smolvlm-nf4 smolvlm-instruct 4bit --decodes plain --keeps 1.0,0.5 --batch-sizes "$SIZES" --questions "$Q" \
  $RUNS $NEW --model-dir "$SMOL" --time-limit 70
step smolvlm-nf4 45 90 "${CMD[@]}"

echo "== summary ($(( $(date +%s) - start )) s)"
cat "$OUT"/*.log 2>/dev/null | grep "^gpu " || echo "no bench finished"
grep -h "passed\|failed\|skipped" "$OUT/pytest-cuda.log" 2>/dev/null | tail -1
