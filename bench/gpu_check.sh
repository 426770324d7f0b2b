#!/usr/bin/env bash
# The trainer's GPU check in one call (bench/gpu_check.py): bench/gpu_check.sh [OUT_DIR] [gpu_check options]
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.log (OUT_DIR: $OUT, else the current folder).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-.}}
shift || true
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"${PYTHON:-python3}" -m bench.gpu_check --out "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
