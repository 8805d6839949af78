#!/usr/bin/env python3
"""Kernel mutants: plants one bug at a time in the CUDA kernel files and checks that the simulator tests fail.

A mutant is one small edit of one kernel file (kernels/*.cu, kernels/*.cuh), by one of these operators:

  barrier  delete a `__syncthreads();` or `__syncwarp();`
  bound    move a comparison by one: `<` <-> `<=`, `>` <-> `>=` (loop bounds, guards, masks, ternaries)
  stride   a leading dimension one too large: `* NAME` -> `* (NAME + 1)` in an index (inside `[...]`, on the
           right of a pointer declaration, in the address argument of a load/store call), and the `ldm`
           argument of a WMMA load/store `NAME` -> `NAME + 1`
  shuffle  a warp shuffle's lane or offset argument `X` -> `(X) * 2`

Only code is mutated (not comments, not preprocessor lines), and each edit stays on its line, so line numbers
in reports and hazard messages stay valid.

How a mutant is run: no crate rebuild. The script builds the simulator tests once (`cargo test --no-run`),
reads the compiler and flags build.rs used for the simulated kernels ($OUT_DIR/sim-kernels.json), compiles
every kernel file with them into objects and links a baseline shared library (simulator runtime + kernels).
The simulator loads such a library instead of its linked-in kernels when RLHF_SIM_KERNELS names it
(src/kernels/sim.rs). The baseline run executes every simulator test alone on the baseline library, recording
its time and the kernels it launches (RLHF_SIM_TRACE). A mutant recompiles only the kernel files it touches
(a header: every file including it), relinks, and runs the tests that launch a kernel of those files, fastest
first, stopping at the first failure (killed: a wrong result, a race-checker hazard or uninitialized read,
an out-of-bounds index, a deadlock report, an overwritten buffer guard, a crash, or a timeout of 10 s + 5x the
test's baseline time). A mutant that passes them all runs them again in race mode (RLHF_SIM_RACE=1, seeds
--race-seeds: random block order and interleaving, so a missing barrier or a stray write into another block's
output shows). A mutant all of whose runs pass survived.

Every survivor must be on the allow-list (kernels/mutants-allowed.txt, lines `FILE:LINE | OPERATOR | mutated
line | reason`) or the run fails; so does an allow-list entry that matches no mutant (the code moved) or whose
mutant is now killed.

Usage: tools/kernel-mutants.py [FILE ...] [--ops barrier,bound,stride,shuffle] [--sample N] [--jobs J]
  FILE           kernel files to mutate (default: every kernels/*.cu and kernels/*.cuh)
  --sample N     run every barrier mutant and a fixed 1/N of the other operators' mutants (chosen by a hash of
                 file, operator and mutated line: the same sample run to run while those lines do not change)
  --skip-allowed do not run the allow-listed mutants (what CI does: they cost the most, every test passing)
  --only-allowed run only them (that each still survives: else its entry is to be removed)
  --match REGEX  only the mutants whose `FILE:LINE OPERATOR mutated line` matches
  --list         print the mutants and exit
"""

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_BINARIES = ["kernels_sim", "kernels_engine_sim", "kernels_unfused_sim"]
OPERATORS = ["barrier", "bound", "stride", "shuffle"]
ALLOWED = os.path.join(ROOT, "kernels", "mutants-allowed.txt")


# ------------------------------------------------------------------------------------------------- mutants


class Mutant:
    def __init__(self, path, line, op, start, end, repl, text):
        self.path, self.line, self.op = path, line, op  # path relative to ROOT, 1-based line
        self.start, self.end, self.repl = start, end, repl  # span of the line replaced by repl
        self.orig = text
        if op == "barrier":  # what a deleted barrier leaves can be empty: name the line it was deleted from
            self.mutated = "(deleted) " + text.strip()
        else:
            self.mutated = (text[:start] + repl + text[end:]).strip()
        self.where = f"{path}:{line}"

    def key(self):
        return (self.where, self.op, self.mutated)

    def sample_hash(self):
        h = hashlib.sha1(f"{self.path}|{self.op}|{self.mutated}".encode()).hexdigest()
        return int(h[:8], 16)


def code_end(line):
    """Index where the code of a line ends (a // comment starts)."""
    i = line.find("//")
    return len(line) if i < 0 else i


def bracket_spans(code, opens="[", closes="]"):
    """(start, end) of every outermost opens..closes span."""
    spans, depth, start = [], 0, 0
    for i, ch in enumerate(code):
        if ch in opens:
            if depth == 0:
                start = i
            depth += 1
        elif ch in closes and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
    return spans


def call_args(code, open_paren):
    """[(start, end)] of the top-level arguments of the call whose '(' is at open_paren."""
    args, depth, start = [], 0, open_paren + 1
    for i in range(open_paren, len(code)):
        ch = code[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                args.append((start, i))
                return args
        elif ch == "," and depth == 1:
            args.append((start, i))
            start = i + 1
    return None  # the call goes on past this line


POINTER_DECL = re.compile(r"^\s*(?:const\s+)?[\w:]+(?:<[^>]*>)?\s*\*\s*(?:__restrict__\s+)?\w+\s*=")
MUL_NAME = re.compile(r"(?<= )\* ([A-Za-z_]\w*)\b(?!\s*[\(\[.])")
CMP = re.compile(r"(?<= )(<=|>=|<|>)(?= )")
FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
MEM_CALL = re.compile(r"\b(load_matrix_sync|store_matrix_sync|load_pack|store_pack|load_chunk<[^>]*>|store_chunk<[^>]*>)\(")
SHFL = re.compile(r"\b__shfl(?:_xor|_down|_up)?_sync\(")


def enumerate_mutants(path, text):
    out = []
    in_macro = False
    for ln, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        macro = in_macro or stripped.startswith("#")
        in_macro = macro and stripped.endswith("\\")
        if macro or not stripped or stripped.startswith("//"):
            continue
        code = line[: code_end(line)]
        add = lambda op, s, e, r: out.append(Mutant(path, ln, op, s, e, r, line))  # noqa: E731
        for m in re.finditer(r"__sync(?:threads|warp)\(\);", code):
            add("barrier", m.start(), m.end(), "")
        for m in CMP.finditer(code):
            add("bound", m.start(), m.end(), FLIP[m.group(1)])
        # stride: address arithmetic regions of the line
        regions = bracket_spans(code)
        if POINTER_DECL.match(code):
            regions.append((code.index("=") + 1, len(code)))
        ldm = []
        for m in MEM_CALL.finditer(code):
            args = call_args(code, m.end() - 1)
            if not args:
                continue
            name = m.group(1)
            if name in ("load_matrix_sync", "store_matrix_sync"):
                # (frag, ptr, ldm[, layout]) and (ptr, frag, ldm, layout)
                ptr = args[1] if name == "load_matrix_sync" else args[0]
                regions.append(ptr)
                if len(args) >= 3:
                    s, e = args[2]
                    a = code[s:e]
                    if re.fullmatch(r"\s*[A-Za-z_]\w*\s*", a):
                        s2 = s + len(a) - len(a.lstrip())
                        ldm.append((s2, s2 + len(a.strip())))
            else:
                regions.append(args[0])
        seen = set()
        for s, e in regions:
            for m in MUL_NAME.finditer(code, s, e):
                if m.start() in seen:
                    continue
                seen.add(m.start())
                add("stride", m.start(), m.end(), f"* ({m.group(1)} + 1)")
        for s, e in ldm:
            add("stride", s, e, f"{code[s:e]} + 1")
        for m in SHFL.finditer(code):
            args = call_args(code, m.end() - 1)
            if args and len(args) >= 3:
                s, e = args[2]
                a = code[s:e]
                s2 = s + len(a) - len(a.lstrip())
                add("shuffle", s2, s2 + len(a.strip()), f"({a.strip()}) * 2")
    return out


def includes(text):
    return re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M)


# ------------------------------------------------------------------------------------------------- build


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def build_tests():
    """Builds the simulator test binaries; returns (build script out dir, {test name: executable})."""
    cmd = ["cargo", "test", "--release", "--no-run", "--message-format=json-render-diagnostics"]
    for t in TEST_BINARIES:
        cmd += ["--test", t]
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("kernel-mutants: building the simulator tests failed")
    out_dir, exes = None, {}
    for l in p.stdout.splitlines():
        try:
            msg = json.loads(l)
        except ValueError:
            continue
        if msg.get("reason") == "build-script-executed" and os.path.isfile(
            os.path.join(msg.get("out_dir", ""), "sim-kernels.json")
        ):
            out_dir = msg["out_dir"]
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            if msg["target"]["name"] in TEST_BINARIES and "test" in msg["target"]["kind"]:
                exes[msg["target"]["name"]] = msg["executable"]
    if not out_dir or len(exes) != len(TEST_BINARIES):
        sys.exit("kernel-mutants: cargo did not report the build script's out dir and the test binaries")
    return out_dir, exes


class Builder:
    """Compiles kernel files with build.rs's recipe and links simulator libraries."""

    def __init__(self, out_dir, work):
        with open(os.path.join(out_dir, "sim-kernels.json")) as f:
            self.recipe = json.load(f)
        self.kdir = self.recipe["kernels_dir"]
        self.work = work
        # Every kernel translation unit, relative to the kernels dir: the engine's files and the test-only ones.
        self.units = [os.path.relpath(p, self.kdir) for p in self.recipe["kernel_files"] + self.recipe["testing_files"]]
        self.base_tree = os.path.join(work, "base")
        shutil.copytree(self.kdir, os.path.join(self.base_tree, "kernels"))
        anchor = os.path.join(work, "anchor.cpp")
        with open(anchor, "w") as f:
            f.write('extern "C" void rlhf_sim_kernels_anchor() {}\n')
        self.anchor = os.path.join(work, "anchor.o")
        sh([self.recipe["cxx"], "-O2", "-fPIC", "-c", anchor, "-o", self.anchor])
        self.base_objs = {}
        with cf.ThreadPoolExecutor(os.cpu_count() or 2) as ex:
            objs = ex.map(lambda u: self.compile(self.base_tree, u, os.path.join(work, "base-obj")), self.units)
            for u, o in zip(self.units, objs):
                self.base_objs[u] = o
        self.base_lib = self.link(os.path.join(work, "base.so"), {})

    def flags(self, tree):
        """The recipe's flags with the kernels dir replaced by `tree`/kernels."""
        k = os.path.join(tree, "kernels")
        out = []
        for a in self.recipe["cxx_flags"]:
            if a == self.kdir:
                a = k
            elif a == "-I" + self.kdir:
                a = "-I" + k
            out.append(a)
        return out

    def compile(self, tree, unit, objdir):
        os.makedirs(objdir, exist_ok=True)
        obj = os.path.join(objdir, unit.replace("/", "_") + ".o")
        src = os.path.join(tree, "kernels", unit)
        sh([self.recipe["cxx"], *self.flags(tree), "-x", "c++", "-c", src, "-o", obj])
        return obj

    def link(self, lib, replaced):
        objs = [replaced.get(u, self.base_objs[u]) for u in self.units]
        sh([self.recipe["cxx"], "-shared", "-Wl,-Bsymbolic", "-pthread", "-o", lib,
            *self.recipe["runtime_objects"], self.anchor, *objs])
        return lib

    def defined_kernels(self, obj, known):
        syms = sh(["nm", "--defined-only", "-g", obj]).stdout.split()
        return {s for s in syms if s in known}


# ------------------------------------------------------------------------------------------------- tests


class Test:
    def __init__(self, binary, exe, name):
        self.binary, self.exe, self.name = binary, exe, name
        self.secs, self.kernels = 0.0, set()

    def __str__(self):
        return f"{self.binary}::{self.name}"


def list_tests(exes):
    tests = []
    for b in TEST_BINARIES:
        out = sh([exes[b], "--list"]).stdout
        for l in out.splitlines():
            if l.endswith(": test"):
                tests.append(Test(b, exes[b], l[: -len(": test")]))
    return tests


def failure_reason(output):
    lines = output.splitlines()
    for i, l in enumerate(lines):
        if "panicked at" in l:
            msg = " ".join(x.strip() for x in lines[i + 1 : i + 3] if x.strip() and not x.startswith("note:"))
            return msg[:300]
    for l in lines:
        if "rlhf-sim:" in l or "error" in l.lower():
            return l.strip()[:300]
    return (lines[-1] if lines else "")[:300]


def run_test(t, env, timeout):
    t0 = time.time()
    try:
        p = subprocess.run([t.exe, "--exact", t.name, "--test-threads=1"], env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.time() - t0, f"timeout after {timeout:.0f} s"
    if p.returncode == 0:
        return True, time.time() - t0, ""
    why = failure_reason(p.stdout + p.stderr)
    if p.returncode < 0:
        why = f"killed by signal {-p.returncode} {why}".strip()
    return False, time.time() - t0, why


def race_env(seed):
    return {"RLHF_SIM_RACE": "1", "RLHF_SIM_SEED": str(seed)}


def test_env(lib, threads, extra=None):
    env = dict(os.environ)
    for k in ["RLHF_SIM_RACE", "RLHF_SIM_SEED", "RLHF_SIM_RACECHECK", "RLHF_SIM_TRACE"]:
        env.pop(k, None)
    env["RLHF_SIM_KERNELS"] = lib
    env["RLHF_SIM_THREADS"] = str(threads)
    env["RAYON_NUM_THREADS"] = str(threads)
    env["RUST_BACKTRACE"] = "0"
    env.update(extra or {})
    return env


# ------------------------------------------------------------------------------------------------- allow-list


def read_allowed():
    entries = []
    if not os.path.exists(ALLOWED):
        return entries
    with open(ALLOWED) as f:
        for n, l in enumerate(f, 1):
            l = l.rstrip("\n")
            if not l.strip() or l.lstrip().startswith("#"):
                continue
            head, sep, reason = l.rpartition(" | ")
            parts = head.split(" | ", 2)
            if not sep or len(parts) != 3 or not reason.strip():
                sys.exit(f"{ALLOWED}:{n}: expected `FILE:LINE | OPERATOR | mutated line | reason`")
            entries.append({"key": (parts[0].strip(), parts[1].strip(), parts[2].strip()), "reason": reason.strip(),
                            "line": n})
    return entries


# ------------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--ops", default=",".join(OPERATORS))
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--race-seeds", default="1", help="race-mode seeds for the survivors of the in-order runs")
    ap.add_argument("--skip-allowed", action="store_true",
                    help="do not run the allow-listed mutants (CI: only a new survivor can fail the run)")
    ap.add_argument("--only-allowed", action="store_true",
                    help="run only the allow-listed mutants (do they all still survive?)")
    ap.add_argument("--match", help="only the mutants whose `FILE:LINE OPERATOR mutated line` matches this regex")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    ops = [o for o in args.ops.split(",") if o]
    race_seeds = [int(x) for x in args.race_seeds.split(",") if x]
    for o in ops:
        if o not in OPERATORS:
            sys.exit(f"unknown operator {o} (known: {', '.join(OPERATORS)})")

    kdir = os.path.join(ROOT, "kernels")
    files = [os.path.relpath(os.path.abspath(f), ROOT) for f in args.files] or sorted(
        os.path.join("kernels", f) for f in os.listdir(kdir) if f.endswith((".cu", ".cuh"))
    )
    all_mutants = []
    for f in files:
        with open(os.path.join(ROOT, f)) as fh:
            all_mutants += [m for m in enumerate_mutants(f, fh.read()) if m.op in ops]
    run = [m for m in all_mutants if m.op == "barrier" or m.sample_hash() % args.sample == 0]
    if args.match:
        run = [m for m in run if re.search(args.match, f"{m.where} {m.op} {m.mutated}")]
    allowed = read_allowed()
    allowed_keys = {e["key"]: e for e in allowed}
    if args.skip_allowed:
        run = [m for m in run if m.key() not in allowed_keys]
    if args.only_allowed:
        run = [m for m in run if m.key() in allowed_keys]
    checked_files = set(files)
    stale = [e for e in allowed if e["key"][0].split(":")[0] in checked_files and e["key"][1] in ops
             and e["key"] not in {m.key() for m in all_mutants}]
    if args.list:
        for m in run:
            print(f"{m.where:28} {m.op:8} {m.mutated}")
        print(f"{len(run)} of {len(all_mutants)} mutants, {len(allowed)} on the allow-list")
        for e in stale:
            print(f"allow-list line {e['line']} matches no mutant: {' | '.join(e['key'])}")
        return 1 if stale else 0

    t_start = time.time()
    print(f"kernel mutants: {len(run)} of {len(all_mutants)} ({', '.join(ops)}; sample 1/{args.sample} of the "
          f"non-barrier operators) in {len(files)} files, {args.jobs} at a time", flush=True)
    out_dir, exes = build_tests()
    work = tempfile.mkdtemp(prefix="rlhf-mutants.", dir=os.environ.get("TMPDIR"))
    try:
        t0 = time.time()
        b = Builder(out_dir, work)
        t_build = time.time() - t0
        jobs = max(1, args.jobs)
        threads = max(1, (os.cpu_count() or 2) // jobs)

        # Baseline: every test alone on the unmutated library, traced; then, for the tests that launch kernels,
        # again in race mode with each seed (a survivor of the in-order schedule gets those runs too).
        t0 = time.time()
        tests = list_tests(exes)
        known = set()
        for t in tests:
            trace = os.path.join(work, "trace.txt")
            if os.path.exists(trace):
                os.remove(trace)
            ok, secs, why = run_test(t, test_env(b.base_lib, threads, {"RLHF_SIM_TRACE": trace}), 1800)
            if not ok:
                sys.exit(f"kernel-mutants: {t} fails on the unmutated kernels: {why}")
            t.secs = secs
            if os.path.exists(trace):
                with open(trace) as f:
                    t.kernels = set(f.read().split())
            known |= t.kernels
            t.race_ok = []
            for seed in race_seeds if t.kernels else []:
                ok, secs, why = run_test(t, test_env(b.base_lib, threads, race_env(seed)), 1800)
                if ok:
                    t.race_ok.append(seed)
                    t.secs = max(t.secs, secs)
                else:
                    print(f"baseline: {t} fails in race mode (seed {seed}), not rerun so: {why}", flush=True)
        t_base = time.time() - t0
        print(f"baseline: kernel library built in {t_build:.1f} s, {len(tests)} tests run alone "
              f"(race mode seeds {race_seeds or 'none'} too) in {t_base:.1f} s:", flush=True)
        for t in sorted(tests, key=lambda t: -t.secs):
            if t.kernels:
                print(f"  {t.secs:6.1f} s  {t}  ({len(t.kernels)} kernels)")

        unit_kernels = {u: b.defined_kernels(o, known) for u, o in b.base_objs.items()}
        sources = {}
        for u in b.units:
            with open(os.path.join(b.base_tree, "kernels", u)) as fh:
                sources[u] = fh.read()

        def dependents(rel):
            """Units whose compile reads kernels/rel (the file itself or, for a header, every includer)."""
            name = os.path.basename(rel)
            found, grew = {rel} if rel in b.units else set(), True
            hdrs = {name}
            while grew:
                grew = False
                for u in b.units:
                    if u not in found and any(os.path.basename(i) in hdrs for i in includes(sources[u])):
                        found.add(u)
                        grew = True
                for h in os.listdir(os.path.join(b.base_tree, "kernels")):
                    if h.endswith(".cuh") and h not in hdrs:
                        with open(os.path.join(b.base_tree, "kernels", h)) as fh:
                            if any(os.path.basename(i) in hdrs for i in includes(fh.read())):
                                hdrs.add(h)
                                grew = True
            return sorted(found)

        lock = threading.Lock()
        results = []
        counter = [0]

        def one(i, m):
            rel = os.path.relpath(m.path, "kernels")
            units = dependents(rel)
            tree = os.path.join(work, f"m{i}")
            shutil.copytree(os.path.join(b.base_tree, "kernels"), os.path.join(tree, "kernels"))
            t0 = time.time()
            src = os.path.join(tree, "kernels", rel)
            with open(src) as fh:
                lines = fh.read().split("\n")
            line = lines[m.line - 1]
            assert line == m.orig, f"{m.where} changed"
            lines[m.line - 1] = line[: m.start] + m.repl + line[m.end :]
            with open(src, "w") as fh:
                fh.write("\n".join(lines))
            verdict, why, ran = None, "", 0
            try:
                objs = {u: b.compile(tree, u, os.path.join(tree, "obj")) for u in units}
                lib = b.link(os.path.join(tree, "m.so"), objs)
            except subprocess.CalledProcessError as e:
                verdict, why = "invalid", (e.stderr or "").strip().splitlines()[:1]
                why = why[0] if why else "does not compile"
            if verdict is None:
                kernels = set().union(*(unit_kernels[u] for u in units))
                chosen = sorted((t for t in tests if t.kernels & kernels), key=lambda t: t.secs)
                verdict = "SURVIVED"
                runs = [(t, test_env(lib, threads), "") for t in chosen]
                for seed in race_seeds:
                    runs += [(t, test_env(lib, threads, race_env(seed)), f" (race mode, seed {seed})")
                             for t in chosen if seed in t.race_ok]
                for t, env, how in runs:
                    ran += 1
                    ok, _, w = run_test(t, env, 10 + 5 * t.secs)
                    if not ok:
                        verdict, why = "killed", f"{t}{how}: {w}"
                        break
                if not chosen:
                    why = "no test launches a kernel of " + ", ".join(units)
            secs = time.time() - t0
            shutil.rmtree(tree, ignore_errors=True)
            with lock:
                counter[0] += 1
                note = why
                if verdict == "SURVIVED" and m.key() in allowed_keys:
                    note = "allowed: " + allowed_keys[m.key()]["reason"]
                print(f"[{counter[0]}/{len(run)}] {verdict:8} {m.where:28} {m.op:8} {m.mutated[:70]:70} "
                      f"{secs:5.1f} s {ran:2} runs  {note[:200]}", flush=True)
                results.append((m, verdict, why, secs))

        with cf.ThreadPoolExecutor(jobs) as ex:
            for f in [ex.submit(one, i, m) for i, m in enumerate(run)]:
                f.result()
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # ---- report
    total_secs = time.time() - t_start
    print()
    print("kill rate per file and operator (killed/run; invalid mutants do not count):")
    table = {}
    for m, v, _, _ in results:
        c = table.setdefault((m.path, m.op), [0, 0])
        if v != "invalid":
            c[1] += 1
            c[0] += v == "killed"
    hdr = "  " + f"{'file':28}" + "".join(f"{o:>12}" for o in ops) + f"{'all':>12}"
    print(hdr)
    for f in files:
        cells, k, n = [], 0, 0
        for o in ops:
            c = table.get((f, o), [0, 0])
            k, n = k + c[0], n + c[1]
            cells.append(f"{c[0]}/{c[1]}")
        print("  " + f"{f:28}" + "".join(f"{x:>12}" for x in cells) + f"{f'{k}/{n}':>12}")
    cells, K, N = [], 0, 0
    for o in ops:
        k = sum(c[0] for (f, op), c in table.items() if op == o)
        n = sum(c[1] for (f, op), c in table.items() if op == o)
        K, N = K + k, N + n
        cells.append(f"{k}/{n}")
    print("  " + f"{'all':28}" + "".join(f"{x:>12}" for x in cells) + f"{f'{K}/{N}':>12}")
    costs = sorted(s for _, v, _, s in results if v != "invalid")
    if costs:
        print(f"per mutant (compile, link, tests): median {costs[len(costs) // 2]:.1f} s, max {costs[-1]:.1f} s; "
              f"total {total_secs / 60:.1f} min for {len(results)} mutants")

    bad = False
    invalid = [(m, w) for m, v, w, _ in results if v == "invalid"]
    for m, w in invalid:
        print(f"INVALID (does not compile) {m.where} {m.op}: {m.mutated}: {w}")
    survivors = [m for m, v, _, _ in results if v == "SURVIVED"]
    new = [m for m in survivors if m.key() not in allowed_keys]
    if new:
        bad = True
        print(f"\n{len(new)} survivor(s) not on {os.path.relpath(ALLOWED, ROOT)}:")
        for m in new:
            print(f"  {m.where} | {m.op} | {m.mutated} | <why it survives>")
    killed_allowed = [m for m, v, _, _ in results if v == "killed" and m.key() in allowed_keys]
    if killed_allowed:
        bad = True
        print("\nallow-list entries whose mutant is now killed (remove them):")
        for m in killed_allowed:
            print(f"  line {allowed_keys[m.key()]['line']}: {m.where} | {m.op} | {m.mutated}")
    if stale:
        bad = True
        print("\nallow-list entries that match no mutant (the code moved or changed; update them):")
        for e in stale:
            print(f"  line {e['line']}: {' | '.join(e['key'])}")
    if invalid:
        bad = True
    print("\nkernel mutants: " + ("FAILED" if bad else "ok") +
          f" ({len(survivors)} survivors, {len(survivors) - len(new)} on the allow-list)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
