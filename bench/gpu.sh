#!/usr/bin/env bash
# GPU measurements in one prepared run (<= 8 minutes on an H100/H200), tables written to $OUT:
#   bash bench/gpu.sh            on a machine with a GPU (jax[cuda], numba, numpy installed)
#   bash bench/gpu.sh --dry-run  CI-sized on the CPU, Pallas interpreted: checks the script
# Installs nothing: the repository root is put on the import path as the package `mmsweep`
# (polars, pyyaml and the other sweep dependencies are not needed by the kernels).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/bench/out}"
mkdir -p "$OUT"
SITE="$(mktemp -d)"
ln -s "$ROOT" "$SITE/mmsweep"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "${1:-}" != "--dry-run" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>&1 || true
fi
python3 "$ROOT/bench/gpu.py" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
