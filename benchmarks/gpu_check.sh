#!/usr/bin/env bash
# The device check of the Triton kernels, on a machine with one CUDA GPU, in under 8 minutes:
#   1. the kernel tests natively on CUDA (fp32, fp16, bf16 cases; no interpreter), with the sm_90 compile check;
#   2. benchmarks/gpu_kernels.py: each kernel vs the torch path and a plain linear-attention baseline at
#      T = 1k..64k (fp32, bf16), the streaming update, target attention and the worker's VistaModel.update
#      throughput on synthetic batches -> JSON + plot.
# Usage: benchmarks/gpu_check.sh [--commit-results]   (results: runs/bench/, or benchmarks/results/ with the flag)
# Exits non-zero when a step fails; the log of each step is in the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
unset TRITON_INTERPRET  # native kernels only

COMMIT=""
OUT=runs/bench
if [ "${1:-}" = "--commit-results" ]; then COMMIT="--commit-results"; OUT=benchmarks/results; fi
mkdir -p "$OUT"

python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA device (on a CPU: python -m benchmarks.gpu_kernels --smoke)")
print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
PY

start=$(date +%s)
echo "== 1/2 kernel tests on CUDA (limit 240 s)"
timeout 240 python -m pytest tests/kernels -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu_check_tests.log"
echo "== 2/2 kernel + worker-update benchmark (limit 200 s)"
timeout 200 python -m benchmarks.gpu_kernels $COMMIT 2>&1 | tee "$OUT/gpu_check_bench.log"
echo "== done in $(( $(date +%s) - start )) s; results in $OUT (gpu_kernels.json, gpu_kernels.png, logs)"
