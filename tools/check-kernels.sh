#!/usr/bin/env bash
# CI check of the CUDA kernels with the pinned nvcc (tools/install-nvcc.sh): compiles every kernels/*.cu to a
# cubin with `-Xptxas -v` for each architecture in RLHF_CUDA_ARCHS (default 80,90: the cubins build.rs
# embeds), prints registers, shared memory and spills per kernel, and FAILS on any nvcc/ptxas warning or
# on any spill (every kernel in kernels/*.cu is on a hot path: the engine launches each per layer per step).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/install-nvcc.sh" >/dev/null
NVCC="$(cat "$ROOT/.toolchain/nvcc-path")"
ARCHS="${RLHF_CUDA_ARCHS:-80,90}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# geometry.cuh, as build.rs writes it: generated from kernels/geometry.rs by a two-line program.
printf '#[path = "%s/kernels/geometry.rs"]\nmod geometry;\nfn main() { print!("{}", geometry::cuda_header()); }\n' \
  "$ROOT" >"$TMP/gen_geometry.rs"
rustc --edition 2021 -o "$TMP/gen_geometry" "$TMP/gen_geometry.rs"
"$TMP/gen_geometry" >"$TMP/geometry.cuh"

status=0
printf '%-12s %-6s %-40s %5s %7s %7s %7s\n' file arch kernel regs smem spillST spillLD
for cu in "$ROOT"/kernels/*.cu; do
  stem="$(basename "$cu" .cu)"
  for arch in ${ARCHS//,/ }; do
    log="$TMP/$stem.sm$arch.log"
    if ! "$NVCC" -cubin -arch="sm_$arch" -O3 -std=c++17 -lineinfo -Xptxas -v -Xptxas -warn-spills \
        -Xptxas -warn-lmem-usage -I "$ROOT/kernels" -I "$TMP" -o "$TMP/$stem.sm$arch.cubin" "$cu" >"$log" 2>&1; then
      cat "$log"
      echo "check-kernels: $stem.cu failed to compile for sm_$arch" >&2
      status=1
      continue
    fi
    if grep -Ei 'warning' "$log" >/dev/null; then
      grep -Ei 'warning' "$log" >&2
      echo "check-kernels: warnings in $stem.cu (sm_$arch)" >&2
      status=1
    fi
    awk -v file="$stem" -v arch="sm_$arch" '
      /Function properties for/ { k = $NF; st = 0; ld = 0 }
      /bytes spill stores/ { for (i = 1; i <= NF; i++) { if ($i == "spill" && $(i+1) == "stores,") st = $(i-2); if ($i == "spill" && $(i+1) == "loads") ld = $(i-2) } }
      /Used [0-9]+ registers/ {
        regs = 0; smem = 0
        for (i = 1; i <= NF; i++) { if ($i == "Used") regs = $(i+1); if ($i ~ /smem/) smem = $(i-2) }
        printf "%-12s %-6s %-40s %5s %7s %7s %7s\n", file, arch, k, regs, smem, st, ld
        if (st + 0 > 0 || ld + 0 > 0) { print "SPILL " k > "/dev/stderr"; bad = 1 }
      }
      END { exit bad }' "$log" || { echo "check-kernels: spills in $stem.cu (sm_$arch)" >&2; status=1; }
  done
done
if [[ $status -ne 0 ]]; then
  echo "check-kernels: FAILED" >&2
else
  echo "check-kernels: ok (no warnings, no spills)"
fi
exit $status
