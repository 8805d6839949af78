#!/usr/bin/env bash
# Barrier mutants: deletes each __syncthreads() / __syncwarp() call of every kernel file in turn, rebuilds the
# simulator and runs the kernel tests; a mutant is killed when a test fails (a wrong result or a race-checker
# hazard report), survived when all pass. Prints killed/survived per mutant and the kill rate per kernel file.
#
# Usage: tools/barrier-mutants.sh [FILE.cu ...]   (default: every kernels/*.cu)
#   MUTANT_TESTS   cargo test selection (default: the three simulator test files)
#   MUTANT_TIMEOUT seconds per mutant's test run (default 900; a timeout counts as killed, e.g. a deadlock)
#
#   MUTANT_TARGET  cargo target directory (default target/mutants, kept between runs: only the first is cold)
#
# Works on a copy of the tracked files in a temporary directory, so the checkout is never modified. Slow: one
# rebuild of the crate per mutant (minutes each on 2 cores), ~45 mutants; run on demand, not in CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-mutants.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$root"
mkdir -p "$tmp/tree"
git ls-files -z | xargs -0 cp --parents -t "$tmp/tree"
export CARGO_TARGET_DIR=${MUTANT_TARGET:-$root/target/mutants}
tests=${MUTANT_TESTS:---test kernels_sim --test kernels_engine_sim --test kernels_unfused_sim}
limit=${MUTANT_TIMEOUT:-900}
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(cd "$root" && ls kernels/*.cu)
export RLHF_NO_CUDA=1

cd "$tmp/tree"
echo "baseline build and tests..."
cargo test --release $tests >"$tmp/base.log" 2>&1 || { echo "tests fail without mutants; see:"; tail -30 "$tmp/base.log"; exit 1; }

declare -A killed total
for f in "${files[@]}"; do
  f=${f#"$root/"}
  mapfile -t lines < <(grep -n -E '__sync(threads|warp)\(\)' "$f" | cut -d: -f1)
  for ln in "${lines[@]}"; do
    cp "$f" "$tmp/orig"
    # delete the first barrier call on that line (the line stays, so line numbers in reports stay valid)
    sed -i -E "${ln}s/__sync(threads|warp)\(\);//" "$f"
    what=$(sed -n "${ln}p" "$tmp/orig" | sed -E 's/^ +//')
    if timeout "$limit" cargo test --release $tests >"$tmp/m.log" 2>&1; then
      verdict=SURVIVED
    else
      verdict=killed
      killed[$f]=$(( ${killed[$f]:-0} + 1 ))
    fi
    total[$f]=$(( ${total[$f]:-0} + 1 ))
    cp "$tmp/orig" "$f"
    printf '%-8s %s:%s  %s\n' "$verdict" "$f" "$ln" "$what"
  done
done
echo
echo "kill rate per kernel file:"
for f in "${!total[@]}"; do
  printf '  %-32s %d/%d\n' "$f" "${killed[$f]:-0}" "${total[$f]}"
done | sort
