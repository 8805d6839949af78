#!/usr/bin/env bash
# Kernel checks for CI (no GPU needed): pinned nvcc, ptxas report (fails on warnings/spills), the simulator
# tests, the simulator tests again in race mode with two seeds, and the kernel mutants (every mutant of every
# operator but the allow-listed survivors must be killed: tools/kernel-mutants.py, kernels/mutants-allowed.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tools/install-nvcc.sh
tools/check-kernels.sh
cargo test --release --test kernels_sim --test kernels_gpu -- --nocapture
for seed in 1 2; do
  RLHF_SIM_RACE=1 RLHF_SIM_SEED=$seed cargo test --release --test kernels_sim
done
python3 tools/kernel-mutants.py --skip-allowed
