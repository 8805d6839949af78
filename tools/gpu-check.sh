#!/usr/bin/env bash
# GPU check: build everything on a machine without a GPU, run it on a machine with one that has no Rust.
#
#   tools/gpu-check.sh build            # here: pinned nvcc, release build with cubins + PTX (sm_90), the two GPU
#                                       # test binaries; copies them (debug info stripped) into .gpu/
#   tools/gpu-check.sh run [OUT_DIR]    # there: GPU tests, gradcheck, bench, the PyTorch reference, the table
#
# Use: run `tools/gpu-check.sh build` here, copy the working tree with `.gpu/` to the GPU machine, and run
# `bash tools/gpu-check.sh run "$OUT"` there with a time limit of about 330 s (DEVELOPERS.md has the exact
# call): one run and a rerun fit in 15 minutes of device time with the machine's start. Before anything runs it
# compares the C library versions the binaries need (recorded by the build) with the machine's and prints a
# verdict (it stops there when the binary cannot start). Each step has its own limit: kernels_gpu 45 s, engine_cuda
# 45 s, gradcheck 50 s (these three with RLHF_CUDA_SYNC=1: a fault is reported by the kernel that caused it),
# bench 75 s (with RLHF_CUDA_PROFILE=1: the time per kernel), generation 40 s, sanitizer 40 s and racecheck 40 s (compute-sanitizer's memcheck and racecheck on kernels_gpu; skipped with a note when the tool is not there),
# torch 70 s (one training batch size; the PyTorch script keeps to its own limit and still prints its JSON),
# table 10 s; and the whole run stops itself after GPU_CHECK_DEADLINE_S seconds (default 300: a step's limit is
# cut to what is left). RLHF_FIXTURES points the test binaries at tests/fixtures of this tree.
#
# What it writes to OUT_DIR (11 files): env.log (the library verdict, nvidia-smi, how libcuda and
# cuBLASLt were found), tests.log (both test binaries), gradcheck.log (rows as they finish; its header says
# whether cubins or PTX were loaded), bench.log (stderr of `rlhf bench`), rlhf_bench.json, bench_sections.jsonl
# (each bench section as it finished), generation.log (sampling tokens/s), sanitizer.log, torch.log (progress of the PyTorch reference), torch.json, table.txt (the comparison table,
# then one summary line per step). At the end all but table.txt go into OUT_DIR/logs.tar.gz (the run's
# output is then two files). The run exits nonzero when any step failed; every step runs regardless.
#
# The run needs: nvidia-smi, python3 with PyTorch (CUDA), the NVIDIA driver's libcuda, and a cuBLASLt for
# CUDA 13 (the CUDA toolkit's, or the one in the nvidia-* Python wheels next to PyTorch). The binaries load both
# at run time (cudarc, dynamic loading); see find_libs below for the names they look for.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GPU_DIR="$ROOT/.gpu"
PTX_WARNING="CUDA kernels not compiled to PTX"   # build.rs's cargo:warning when it built without nvcc

die() { echo "gpu-check: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------- build
build() {
  cd "$ROOT" || die "no repository root"
  command -v cargo >/dev/null || die "cargo not found"
  bash tools/install-nvcc.sh || die "tools/install-nvcc.sh failed"
  local pinned; pinned="$(cat .toolchain/nvcc-path 2>/dev/null)"
  # build.rs takes NVCC, CUDA_HOME/CUDA_PATH, PATH before the pinned .toolchain: say which one this build uses.
  local used=""
  if [[ -n "${NVCC:-}" ]]; then used="$NVCC"
  elif [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then used="$CUDA_HOME/bin/nvcc"
  elif [[ -n "${CUDA_PATH:-}" && -x "$CUDA_PATH/bin/nvcc" ]]; then used="$CUDA_PATH/bin/nvcc"
  elif command -v nvcc >/dev/null; then used="$(command -v nvcc)"
  else used="$pinned"; fi
  [[ "$used" == "$pinned" ]] || echo "gpu-check: WARNING: build.rs will use $used, not the pinned $pinned" >&2
  echo "gpu-check: nvcc $used ($("$used" --version | grep -o 'release [0-9.]*'))"

  rm -rf "$GPU_DIR"
  mkdir -p "$GPU_DIR" target
  local log="$ROOT/target/gpu-check-build.log"
  : > "$log"
  # The GPU is an H200 (sm_90): its cubins and PTX only, which halves the nvcc time and the bundle.
  export RLHF_CUDA_ARCHS="${RLHF_CUDA_ARCHS:-90}"
  echo "gpu-check: cargo build --release, RLHF_CUDA_ARCHS=$RLHF_CUDA_ARCHS (log: $log)"
  cargo build --release 2>&1 | tee -a "$log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "cargo build --release failed"
  echo "gpu-check: cargo test --release --no-run --test kernels_gpu --test kernels_engine_sim"
  cargo test --release --no-run --test kernels_gpu --test kernels_engine_sim 2>&1 | tee -a "$log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "building the test binaries failed"

  # The binaries must carry the kernels' PTX: a build without nvcc still succeeds (CPU-only) and says so.
  if grep -q "$PTX_WARNING" "$log"; then
    grep "$PTX_WARNING" "$log" | head -n 1 >&2
    die "this build has no CUDA kernels (see the warning above); fix nvcc and build again"
  fi
  local gen; gen="$(ls -t target/release/build/rlhf-*/out/kernels_gen.rs 2>/dev/null | head -n 1)"
  [[ -n "$gen" ]] || die "no target/release/build/rlhf-*/out/kernels_gen.rs (did build.rs run?)"
  if ! grep -q 'PTX_UNAVAILABLE_REASON: Option<&str> = None;' "$gen"; then
    grep 'PTX_UNAVAILABLE_REASON' "$gen" >&2
    die "$gen says the kernels were not compiled to PTX"
  fi
  local n90; n90="$(grep -c ', 90, include_str!' "$gen")"
  [[ "$n90" -gt 0 ]] || die "$gen has no sm_90 PTX module (RLHF_CUDA_ARCHS=${RLHF_CUDA_ARCHS:-unset})"
  local c90; c90="$(grep -c ', 90, include_bytes!' "$gen")"
  [[ "$c90" -eq "$n90" ]] || die "$gen has $n90 sm_90 PTX modules but $c90 sm_90 cubins"
  echo "gpu-check: $n90 kernel files compiled for sm_90 (cubin + PTX; $(grep -c ', 80, include_str!' "$gen") for sm_80)"

  # Test binaries: the paths cargo printed ("Executable tests/x.rs (target/release/deps/x-HASH)"), else the newest.
  local bins=("target/release/rlhf")
  local t p
  for t in kernels_gpu kernels_engine_sim; do
    p="$(grep -o "target/release/deps/$t-[0-9a-f]*" "$log" | tail -n 1)"
    if [[ -z "$p" || ! -x "$p" ]]; then
      p="$(ls -t target/release/deps/"$t"-* 2>/dev/null | grep -v '\.[a-z]*$' | head -n 1)"
    fi
    [[ -n "$p" && -x "$p" ]] || die "no test binary for $t under target/release/deps"
    bins+=("$p")
  done
  for p in "${bins[@]}"; do
    local dst; dst="$GPU_DIR/$(basename "$p")"
    if command -v objcopy >/dev/null; then
      objcopy --strip-debug "$p" "$dst" || die "objcopy --strip-debug $p failed"
    else
      echo "gpu-check: WARNING: no objcopy; copying $p with its debug info (large)" >&2
      cp "$p" "$dst"
    fi
    chmod +x "$dst"
    grep -a -q '\.target sm_90' "$dst" || die "$dst carries no sm_90 PTX text"
  done
  # What the binaries need of the C and C++ runtime libraries (the newest symbol version of each over all
  # three), which the run compares with the GPU machine's before it starts anything.
  local needs; needs="$(for p in "$GPU_DIR"/*; do objdump -T "$p" 2>/dev/null; done)"
  local libs; libs="$(for p in "$GPU_DIR"/*; do objdump -p "$p" 2>/dev/null | awk '/NEEDED/ {print $2}'; done | sort -u | tr '\n' ' ')"
  {
    echo "git=$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nvcc=$("$used" --version | grep -o 'release [0-9.]*, V[0-9.]*')"
    echo "ptx_sm90_files=$n90"
    echo "glibc_needed=$(grep -o 'GLIBC_[0-9.]*[0-9]' <<< "$needs" | sort -V | tail -n 1)"
    echo "glibcxx_needed=$(grep -o 'GLIBCXX_[0-9.]*[0-9]' <<< "$needs" | sort -V | tail -n 1)"
    echo "libs_needed=$libs"
  } > "$GPU_DIR/build-info.txt"

  # The binaries travel xz-compressed (about a quarter of their size: the tree's limit is 64 MiB); the run
  # unpacks them.
  local names=(); for p in "${bins[@]}"; do names+=("$(basename "$p")"); done
  XZ_OPT="-6 -T2" tar -C "$GPU_DIR" -cJf "$GPU_DIR/bins.tar.xz" "${names[@]}" || die "compressing the binaries failed"
  (cd "$GPU_DIR" && rm -f "${names[@]}")

  echo
  echo "gpu-check: .gpu/ (debug info stripped, binaries in bins.tar.xz):"
  ls -l "$GPU_DIR"
  local gpu_bytes tree_bytes
  gpu_bytes="$(du -cb "$GPU_DIR" | tail -n 1 | cut -f 1)"
  tree_bytes="$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')"
  echo "gpu-check: .gpu is $((gpu_bytes / 1048576)) MiB; with the working tree (~$((${tree_bytes:-0} / 1048576)) MiB) that travels: $(((gpu_bytes + ${tree_bytes:-0}) / 1048576)) MiB of the 64 MiB allowed"
  (( gpu_bytes + ${tree_bytes:-0} < 64 * 1048576 )) || echo "gpu-check: WARNING: over 64 MiB, the run would be refused" >&2
  cat "$GPU_DIR/build-info.txt"
  echo
  echo "gpu-check: ready. Copy the tree with .gpu/ to the GPU machine and run there: bash tools/gpu-check.sh run OUT_DIR (about 330 s at most)"
}

# ---------------------------------------------------------------------------------------------------- run
# cudarc 0.19 (features dynamic-loading + cuda-13000) dlopens the first name that loads, in this order:
#   lib<N>.so lib<N>64.so lib<N>64_13.so lib<N>64_130.so lib<N>64_130_0.so lib<N>64_10.so lib<N>64_11.so
#   lib<N>64_12.so lib<N>64_9.so lib<N>.so.13 lib<N>.so.12 lib<N>.so.11 lib<N>.so.10 lib<N>.so.9 lib<N>.so.1
# with N = cuda (then nvcuda) for the driver and N = cublasLt for cuBLASLt. The driver is libcuda.so.1 (last
# name); cuBLASLt 13 is libcublasLt.so.13. To make the choice deterministic (an unversioned or older
# libcublasLt.so earlier on the search path would otherwise win), the run puts a folder first on
# LD_LIBRARY_PATH holding libcuda.so and libcublasLt.so, links to the files chosen here.

LIBS_DIR=""
lib_search_dirs() {
  # PyTorch's wheels first (known to work with this driver), then the loader's path, the driver's, the toolkit's.
  python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os
for name in ("nvidia", "torch"):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    for loc in (list(spec.submodule_search_locations or []) if spec else []):
        if name == "torch":
            print(os.path.join(loc, "lib"))
        else:
            for d in sorted(glob.glob(os.path.join(loc, "*", "lib")) + glob.glob(os.path.join(loc, "*", "lib64"))):
                print(d)
PY
  tr ':' '\n' <<< "${LD_LIBRARY_PATH:-}"
  ldconfig -p 2>/dev/null | awk '/x86-64/ && /lib(cuda|cublasLt)\.so/ {print $NF}' | xargs -r -n 1 dirname
  echo /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu | tr ' ' '\n'
  local d
  for d in /usr/local/cuda /usr/local/cuda-13* /usr/local/cuda-1[0-9]*; do
    [[ -d "$d" ]] && printf '%s\n' "$d/lib64" "$d/targets/x86_64-linux/lib"
  done
  for d in /usr/local/cuda/compat /usr/local/cuda-*/compat; do   # forward-compatibility driver: last resort
    [[ -d "$d" ]] && echo "$d"
  done
}

# pick_lib NAME PREFERRED_SONAME DIRS...: the best file for NAME: PREFERRED_SONAME, then NAME.so.<major>.*, then
# the unversioned NAME.so, then any other version (said in the log).
pick_lib() {
  local name="$1" want="$2"; shift 2
  local d f
  for d in "$@"; do [[ -e "$d/$want" ]] && { echo "$d/$want"; return 0; }; done
  for d in "$@"; do
    for f in "$d/$want".*; do [[ -e "$f" ]] && { echo "$f"; return 0; }; done
  done
  for d in "$@"; do [[ -e "$d/$name.so" ]] && { echo "$d/$name.so"; return 0; }; done
  for d in "$@"; do
    for f in "$d/$name".so.*; do [[ -e "$f" ]] && { echo "$f"; return 0; }; done
  done
  return 1
}

find_libs() {
  LIBS_DIR="$(mktemp -d /tmp/gpu-check-libs.XXXXXX)"
  local dirs=() d seen=" "
  while IFS= read -r d; do
    [[ -n "$d" && -d "$d" && "$seen" != *" $d "* ]] || continue
    dirs+=("$d"); seen+="$d "
  done < <(lib_search_dirs)
  echo "library folders searched, in order:"; printf '  %s\n' "${dirs[@]}"

  # libcuda: the driver's own one. The loader cache names it when the driver is installed the usual way.
  local cuda; cuda="$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / && /x86-64/ {print $NF; exit}')"
  [[ -n "$cuda" && -e "$cuda" ]] || cuda="$(pick_lib libcuda libcuda.so.1 "${dirs[@]}")"
  if [[ -n "$cuda" ]]; then
    ln -sf "$(readlink -f "$cuda")" "$LIBS_DIR/libcuda.so"
    echo "libcuda:    $cuda -> $(readlink -f "$cuda"); linked as $LIBS_DIR/libcuda.so"
    [[ "$cuda" == */compat/* ]] && echo "  NOTE: this is the CUDA forward-compatibility libcuda, not the installed driver's"
  else
    echo "libcuda:    NOT FOUND (the CUDA steps will fail)"
  fi

  local lt; lt="$(pick_lib libcublasLt libcublasLt.so.13 "${dirs[@]}")"
  if [[ -n "$lt" ]]; then
    local real base; real="$(readlink -f "$lt")"; base="$(basename "$lt")"
    ln -sf "$real" "$LIBS_DIR/libcublasLt.so"
    ln -sf "$real" "$LIBS_DIR/libcublasLt.so.13"
    echo "cuBLASLt:   $lt -> $real; linked as $LIBS_DIR/libcublasLt.so and libcublasLt.so.13"
    case "$base" in
      libcublasLt.so.13|libcublasLt.so.13.*) ;;
      libcublasLt.so) echo "  NOTE: only an unversioned libcublasLt.so was found; its version is checked below" ;;
      *) echo "  NOTE: no libcublasLt.so.13 found; $base (another version) is linked under the names cudarc looks for" ;;
    esac
    export LD_LIBRARY_PATH="$LIBS_DIR:$(dirname "$real")${cuda:+:$(dirname "$(readlink -f "$cuda")")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  else
    echo "cuBLASLt:   NOT FOUND in the folders above (the CUDA backend will fail)"
    export LD_LIBRARY_PATH="$LIBS_DIR${cuda:+:$(dirname "$(readlink -f "$cuda")")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  # Load both by the first names cudarc tries, and print their versions.
  python3 - <<'PY'
import ctypes
try:
    cu = ctypes.CDLL("libcuda.so")
    v = ctypes.c_int(0)
    rc = cu.cuDriverGetVersion(ctypes.byref(v))
    print(f"check: dlopen(libcuda.so) ok, cuDriverGetVersion rc={rc} -> {v.value // 1000}.{v.value % 1000 // 10}")
except OSError as e:
    print(f"check: dlopen(libcuda.so) FAILED: {e}")
try:
    lt = ctypes.CDLL("libcublasLt.so")
    lt.cublasLtGetVersion.restype = ctypes.c_size_t
    print(f"check: dlopen(libcublasLt.so) ok, cublasLtGetVersion -> {lt.cublasLtGetVersion()}")
except (OSError, AttributeError) as e:
    print(f"check: dlopen(libcublasLt.so) FAILED: {e}")
PY
  command -v ldd >/dev/null && [[ -e "$LIBS_DIR/libcublasLt.so" ]] && { echo "ldd libcublasLt:"; ldd "$LIBS_DIR/libcublasLt.so"; }
  return 0
}

STEP_NAMES=() STEP_STATUS=() STEP_SECS=()
T_START=$SECONDS
DEADLINE="${GPU_CHECK_DEADLINE_S:-300}"

# version_ok NEEDED HAVE: whether version HAVE (like 2.35) is at least NEEDED.
version_ok() { [[ -z "$1" || "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" == "$1" ]]; }

# libc_verdict: the glibc and libstdc++ symbol versions the binaries need (build-info.txt) against this
# machine's; prints one line each and a verdict (nonzero when they look too old or missing).
libc_verdict() {
  local info="$GPU_DIR/build-info.txt" ok=0
  local need_c need_cxx libs
  need_c="$(sed -n 's/^glibc_needed=GLIBC_//p' "$info" 2>/dev/null)"
  need_cxx="$(sed -n 's/^glibcxx_needed=GLIBCXX_//p' "$info" 2>/dev/null)"
  libs="$(sed -n 's/^libs_needed=//p' "$info" 2>/dev/null)"
  local have_c; have_c="$(ldd --version 2>&1 | head -n 1 | grep -o '[0-9]\+\.[0-9]\+$')"
  if [[ -z "$need_c" ]]; then echo "libc check: build-info.txt records no glibc requirement (old bundle?)"
  elif [[ -z "$have_c" ]]; then echo "libc check: glibc: the binaries need $need_c; ldd --version says nothing usable here"; ok=1
  elif version_ok "$need_c" "$have_c"; then echo "libc check: glibc: need $need_c, have $have_c: ok"
  else echo "libc check: glibc: need $need_c, have $have_c: TOO OLD"; ok=1; fi
  if [[ " $libs " == *" libstdc++.so.6 "* || -n "$need_cxx" ]]; then
    local cxx; cxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 / && /x86-64/ {print $NF; exit}')"
    local have_cxx=""
    [[ -n "$cxx" ]] && have_cxx="$(grep -a -o 'GLIBCXX_[0-9.]*[0-9]' "$(readlink -f "$cxx")" | sed 's/GLIBCXX_//' | sort -V | tail -n 1)"
    if [[ -z "$cxx" ]]; then echo "libc check: libstdc++.so.6: needed, NOT FOUND here"; ok=1
    elif version_ok "$need_cxx" "$have_cxx"; then echo "libc check: libstdc++: need ${need_cxx:-any}, have $have_cxx ($cxx): ok"
    else echo "libc check: libstdc++: need $need_cxx, have $have_cxx ($cxx): TOO OLD"; ok=1; fi
  else
    echo "libc check: the binaries do not need libstdc++"
  fi
  if (( ok == 0 )); then echo "libc check: VERDICT: the binaries built there can run here"
  else echo "libc check: VERDICT: the binaries cannot run here (build on a machine with an older glibc, or build here)"; fi
  return $ok
}

# step NAME BUDGET_S LOG CMD...: run CMD (stdout and stderr) under timeout, appended to LOG and to the console.
step() {
  local name="$1" budget="$2" log="$3"; shift 3
  local left=$((DEADLINE - (SECONDS - T_START)))
  (( budget > left )) && budget=$left
  if (( budget < 5 )); then
    echo "== $name: SKIPPED (out of time: the run's deadline is ${DEADLINE} s)" | tee -a "$log"
    STEP_NAMES+=("$name"); STEP_STATUS+=("SKIP (no time left)"); STEP_SECS+=(0)
    return 1
  fi
  echo "== $name (budget ${budget} s): $*" | tee -a "$log"
  local t0=$SECONDS rc
  timeout -k 5 "$budget" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local status="ok"
  if (( rc == 124 || rc == 137 )); then status="FAIL (timed out after ${budget} s)"
  elif (( rc != 0 )); then status="FAIL (exit $rc)"; fi
  STEP_NAMES+=("$name"); STEP_STATUS+=("$status"); STEP_SECS+=($((SECONDS - t0)))
  echo "== $name: $status in $((SECONDS - t0)) s" | tee -a "$log"
  [[ "$status" == ok ]]
}

# fail_last REASON: mark the step just run as failed (the command passed, but its output says otherwise).
fail_last() {
  local i=$((${#STEP_STATUS[@]} - 1))
  [[ "${STEP_STATUS[$i]}" == ok ]] && STEP_STATUS[$i]="FAIL ($1)"
  echo "== ${STEP_NAMES[$i]}: FAIL ($1)"
}

# A cargo test binary's log: it must have run at least one test and none may have skipped for want of a GPU.
check_test_log() {
  local log="$1" from="$2"
  local part; part="$(sed -n "/^== $from (budget/,\$p" "$log")"
  if grep -q "did not run here" <<< "$part"; then
    fail_last "the GPU test did not run: $(grep -m 1 -o 'did not run here: .*' <<< "$part" | cut -c 19-)"
  elif grep -q "running 0 tests" <<< "$part"; then fail_last "no test matched"
  fi
}

run() {
  cd "$ROOT" || die "no repository root"
  local out="${1:-${OUT:-/tmp/gpu-check-out}}"
  mkdir -p "$out" || die "cannot create $out"
  out="$(cd "$out" && pwd)"
  export PYTHONUNBUFFERED=1
  if [[ -f "$GPU_DIR/bins.tar.xz" && ! -e "$GPU_DIR/rlhf" ]]; then
    tar -C "$GPU_DIR" -xJf "$GPU_DIR/bins.tar.xz" || die "unpacking .gpu/bins.tar.xz failed"
  fi
  [[ -x "$GPU_DIR/rlhf" ]] || chmod +x "$GPU_DIR"/* 2>/dev/null
  [[ -x "$GPU_DIR/rlhf" ]] || die "no .gpu/rlhf: run 'tools/gpu-check.sh build' first and copy .gpu/ along"
  local kgpu keng
  kgpu="$(ls -t "$GPU_DIR"/kernels_gpu-* 2>/dev/null | head -n 1)"
  keng="$(ls -t "$GPU_DIR"/kernels_engine_sim-* 2>/dev/null | head -n 1)"

  export RLHF_FIXTURES="$ROOT/tests/fixtures"
  {
    echo "gpu-check run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), repository $ROOT"
    cat "$GPU_DIR/build-info.txt" 2>/dev/null
    echo "glibc here: $(ldd --version 2>&1 | head -n 1)"
  } 2>&1 | tee "$out/env.log"
  libc_verdict 2>&1 | tee -a "$out/env.log"
  # The verdict reads version strings; whether the binary starts is the fact (a missing ldconfig cache must
  # not stop a run that would work).
  if ! "$GPU_DIR/rlhf" --help > /dev/null 2> "$out/.start.txt"; then
    tee -a "$out/env.log" < "$out/.start.txt"
    die "the binaries in .gpu/ cannot start on this machine (see the libc check above and $out/env.log)"
  fi
  rm -f "$out/.start.txt"
  echo "libc check: .gpu/rlhf starts here" | tee -a "$out/env.log"
  {
    echo "RLHF_FIXTURES=$RLHF_FIXTURES"
    nvidia-smi 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1
  } 2>&1 | tee -a "$out/env.log"
  # PyTorch keeps the library path it came with: the folders chosen below are for our binaries only.
  local orig_env=(env -u LD_LIBRARY_PATH)
  [[ -n "${LD_LIBRARY_PATH+set}" ]] && orig_env=(env "LD_LIBRARY_PATH=$LD_LIBRARY_PATH")
  # In this shell (not a pipeline's subshell), so that its LD_LIBRARY_PATH holds for the steps below.
  find_libs > "$out/.libs.txt" 2>&1
  tee -a "$out/env.log" < "$out/.libs.txt"
  rm -f "$out/.libs.txt"

  local tests_log="$out/tests.log"
  : > "$tests_log"
  if [[ -n "$kgpu" ]]; then
    step kernels_gpu 45 "$tests_log" env RLHF_CUDA_SYNC=1 "$kgpu" --nocapture --test-threads 1 && check_test_log "$tests_log" kernels_gpu
  else
    STEP_NAMES+=(kernels_gpu); STEP_STATUS+=("FAIL (no .gpu/kernels_gpu-* binary)"); STEP_SECS+=(0)
  fi
  if [[ -n "$keng" ]]; then
    step engine_cuda 45 "$tests_log" env RLHF_CUDA_SYNC=1 "$keng" --nocapture --test-threads 1 cuda && check_test_log "$tests_log" engine_cuda
  else
    STEP_NAMES+=(engine_cuda); STEP_STATUS+=("FAIL (no .gpu/kernels_engine_sim-* binary)"); STEP_SECS+=(0)
  fi

  if ! "$GPU_DIR/rlhf" gradcheck --help 2>/dev/null | grep -q -- '--device'; then
    echo "NOTE: this rlhf's gradcheck has no --device option; the step below fails on that" | tee "$out/gradcheck.log"
  else
    : > "$out/gradcheck.log"
  fi
  step gradcheck 50 "$out/gradcheck.log" env RLHF_CUDA_SYNC=1 "$GPU_DIR/rlhf" gradcheck --device cuda
  echo "kernels loaded: $(grep -m 1 -o '([0-9]* x sm_[^)]*)' "$out/gradcheck.log" || echo 'not reported (see gradcheck.log)')" | tee -a "$out/env.log"

  : > "$out/bench.log"
  rm -f "$out/rlhf_bench.json" "$out/bench_sections.jsonl"
  # stdout (the JSON) to its file, stderr to the log; each section to bench_sections.jsonl as it finishes.
  # RLHF_CUDA_PROFILE=1: the report ends with the time per kernel over a few training steps (bench.log).
  step bench 75 "$out/bench.log" env RLHF_CUDA_PROFILE=1 bash -c '"$1" bench --device cuda --json --sections "$3" 2>&1 1>"$2"' _ "$GPU_DIR/rlhf" "$out/rlhf_bench.json" "$out/bench_sections.jsonl" \
    && { python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/rlhf_bench.json" 2>/dev/null || fail_last "rlhf_bench.json is not JSON"; }

  # Rollouts: batched sampling with the KV cache on the device (GPT-2 small, 16-token prompts, 128 new tokens).
  : > "$out/generation.log"
  step generation 40 "$out/generation.log" "$GPU_DIR/rlhf" bench --section generation --device cuda --gen-batch 1,16,64,256

  # compute-sanitizer (memcheck) over the kernel test, where the machine has it.
  : > "$out/sanitizer.log"
  local san; san="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)"
  if [[ -n "$san" && -n "$kgpu" ]]; then
    step sanitizer 40 "$out/sanitizer.log" "$san" --tool memcheck --error-exitcode 3 "$kgpu" --nocapture --test-threads 1
    # Shared-memory hazards on the real GPU (the simulator's race checker covers the same kernels here).
    step racecheck 40 "$out/sanitizer.log" "$san" --tool racecheck --error-exitcode 3 "$kgpu" --nocapture --test-threads 1
  else
    echo "== sanitizer: SKIPPED (no compute-sanitizer on PATH or under /usr/local/cuda*/bin)" | tee -a "$out/sanitizer.log"
    STEP_NAMES+=(sanitizer); STEP_STATUS+=("ok (skipped: no compute-sanitizer)"); STEP_SECS+=(0)
  fi

  : > "$out/torch.log"
  rm -f "$out/torch.json"
  # The reference's own time limit, under the step's: it skips what would not fit and still prints its JSON.
  local tb=$((DEADLINE - (SECONDS - T_START) - 15)); (( tb > 60 )) && tb=60; (( tb < 10 )) && tb=10
  step torch 70 "$out/torch.log" "${orig_env[@]}" bash -c 'python3 "$1" --budget-s "$3" --batches 8 2>&1 1>"$2"' _ "$ROOT/tools/torch_compare.py" "$out/torch.json" "$tb" \
    && { python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$out/torch.json" 2>/dev/null || fail_last "torch.json is not JSON"; }

  : > "$out/table.txt"
  step table 10 "$out/table.txt" "${orig_env[@]}" python3 "$ROOT/tools/gpu_table.py" "$out/rlhf_bench.json" "$out/torch.json"

  local i failed=0
  {
    echo
    echo "gpu-check summary ($((SECONDS - T_START)) s in all):"
    for i in "${!STEP_NAMES[@]}"; do
      printf '  %-12s %4s s  %.90s\n' "${STEP_NAMES[$i]}" "${STEP_SECS[$i]}" "${STEP_STATUS[$i]}"
    done
  } | tee -a "$out/table.txt"
  for i in "${!STEP_STATUS[@]}"; do [[ "${STEP_STATUS[$i]}" == ok* ]] || failed=1; done
  rm -rf "$LIBS_DIR"
  # The logs in one archive beside the table: two files to copy back from the GPU machine.
  (cd "$out" && tar -czf logs.tar.gz --exclude=logs.tar.gz --exclude=table.txt -- * \
    && find . -maxdepth 1 -type f ! -name logs.tar.gz ! -name table.txt -delete) \
    || echo "gpu-check: packing the logs into $out/logs.tar.gz failed; they stay as they are"
  if (( failed )); then echo "gpu-check: FAILED (see the summary above and the logs in $out)"; exit 1; fi
  echo "gpu-check: all steps passed (logs in $out)"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: tools/gpu-check.sh build | run [OUT_DIR]" >&2; exit 2 ;;
esac
