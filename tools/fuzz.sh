#!/usr/bin/env bash
# Coverage-guided fuzzing of every loader and parser (fuzz/, libFuzzer through libfuzzer-sys).
#
#   bash tools/fuzz.sh [--time S | --runs N] [--seed K] [TARGET ...]
#
# Builds the targets on the stable toolchain (SanitizerCoverage through -Cpasses=sancov-module and LLVM
# options, no nightly flag), writes the seed corpus from the test fixtures (fuzz/corpus/<target>/, kept
# between runs), then runs each target for S seconds (default 30) or N executions, with a 10 s timeout per
# input, 2 GiB of RSS and any single allocation over 256 MiB counted as a crash (fuzz/src/lib.rs). Fails when
# a target finds a crash, hang or oversized allocation: the input is left in fuzz/artifacts/<target>/, to be
# turned into a test. Prints executions, coverage (libFuzzer's cov: edges, ft: features) and the result per
# target. --seed fixes libFuzzer's random seed (default: a new one per run); with --runs and a fresh corpus
# (as in CI's clean clone) the run is reproducible. Targets: safetensors hf_config llmc shards tokenizer jsonl judge_output (default: all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

ALL=(safetensors hf_config llmc shards tokenizer jsonl judge_output)
LIMIT=(-max_total_time=30)
TARGETS=()
SEED=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) LIMIT=(-max_total_time="$2"); shift 2 ;;
    --runs) LIMIT=(-runs="$2"); shift 2 ;;
    --seed) SEED=(-seed="$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")

# An explicit --target keeps these flags off build scripts and proc macros (they run on the host uninstrumented).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
export RLHF_NO_CUDA=1   # the loaders need no kernels: skip the PTX build
cargo build --release --target "$HOST" --bins
BIN="$ROOT/fuzz/target/$HOST/release"

status=0
printf '%-13s %12s %8s %8s %8s  %s\n' target executions exec/s cov ft result
for t in "${TARGETS[@]}"; do
  mkdir -p "artifacts/$t" "corpus/$t"
  log="artifacts/$t/last-run.log"
  if RLHF_FUZZ_SEEDS="corpus/$t" "$BIN/$t" "corpus/$t" "${LIMIT[@]}" "${SEED[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see fuzz/$log and fuzz/artifacts/$t/)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-13s %12s %8s %8s %8s  %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "$result"
done
exit $status
