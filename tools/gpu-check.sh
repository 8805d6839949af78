#!/usr/bin/env bash
# Device check for a machine with an NVIDIA GPU, built nothing there: run the GPU kernel test binary that was
# built elsewhere (`cargo test --release --no-run --test kernels_gpu`, carried with the tree) and keep its log.
#   tools/gpu-check.sh [OUT_DIR]
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${OUT:-/tmp}}"
mkdir -p "$OUT"
BIN="$(ls -t "$ROOT"/target/release/deps/kernels_gpu-* 2>/dev/null | grep -v '\.d$' | head -n 1)"
if [[ -z "$BIN" ]]; then
  echo "gpu-check: no kernels_gpu test binary; build it with: cargo test --release --no-run --test kernels_gpu" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
"$BIN" --nocapture --test-threads 1 2>&1 | tee "$OUT/kernels_gpu.log"
rc=${PIPESTATUS[0]}
if grep -q "did not run here" "$OUT/kernels_gpu.log"; then
  echo "gpu-check: the GPU test did not run (see the log above)" >&2
  exit 1
fi
exit "$rc"
