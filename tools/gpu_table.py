#!/usr/bin/env python3
"""Ours against PyTorch on the GPU, as one short table.

  tools/gpu_table.py RLHF_JSON TORCH_JSON      # from `rlhf bench --device cuda --json` and tools/torch_compare.py
  tools/gpu_table.py --selftest                # renders two made-up files (no GPU, no torch)

Ratios are speedups, torch time / our time (tokens/s ours / tokens/s torch for training steps): above 1 we are
faster. Targets: kernels and attention >= 1.0, training steps >= 1.2, our memory-bound kernels >= 0.85 of the
copy ceiling that `rlhf bench` measured. A missing or unreadable entry prints n/a. Exit status 0 when the table
rendered (also with MISS rows); with --strict, 1 when any row misses its target.
"""
import json
import os
import re
import sys
import tempfile

KERNEL_TARGET = 1.0
TRAIN_TARGET = 1.2
COPY_TARGET = 0.85


def load(path):
    """The JSON object in path, or ({}, why) when it is missing or unreadable."""
    try:
        with open(path) as f:
            d = json.load(f)
        return (d, None) if isinstance(d, dict) else ({}, f"{path}: not a JSON object")
    except (OSError, ValueError) as e:
        return {}, f"{path}: {e}"


def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else None


def ints(shape):
    return [int(v) for v in re.findall(r"\d+", str(shape))] if shape is not None else []


def pick_kernel(entries, name):
    """Our or torch's entry for a kernel name (bf16 first when several dtypes are listed)."""
    cands = [k for k in entries if isinstance(k, dict) and k.get("name") == name]
    bf = [k for k in cands if str(k.get("dtype", "bf16")).lower() in ("bf16", "bfloat16")]
    return (bf or cands or [None])[0]


def fmt_ms(ms):
    if ms is None:
        return "n/a"
    return f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.3f} ms"


def fmt_tok(t):
    return "n/a" if t is None else f"{t / 1e3:.0f}k tok/s"


class Table:
    def __init__(self):
        self.rows = []
        self.misses = 0
        self.passes = 0
        self.notes = []

    def add(self, what, ours, torch_, ratio, target, status=None):
        if status is None:
            if ratio is None or target is None:
                status = "n/a" if target is not None else "info"
            else:
                status = "PASS" if ratio >= target else "MISS"
        if status == "MISS":
            self.misses += 1
        elif status == "PASS":
            self.passes += 1
        r = "n/a" if ratio is None else (f"{ratio:.2f}x" if target != COPY_TARGET else f"{ratio:.2f}")
        t = "-" if target is None else (f">={target:.2f}x" if target != COPY_TARGET else f">={target:.2f}")
        self.rows.append((what, ours, torch_, r, t, status))

    def render(self):
        head = ("", "ours", "pytorch", "ratio", "target", "")
        w = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(6)]
        line = lambda r: f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  {r[4]:>{w[4]}}  {r[5]}"
        out = [line(head), "-" * (sum(w) + 10)] + [line(r) for r in self.rows]
        return "\n".join(out)


def speedup(torch_ms, ours_ms):
    t, o = num(torch_ms), num(ours_ms)
    return t / o if t is not None and o is not None and o > 0 else None


def build_table(ours, torch_):
    tab = Table()
    ok = ours.get("kernels") if isinstance(ours.get("kernels"), list) else []
    tk = torch_.get("kernels") if isinstance(torch_.get("kernels"), list) else []
    for name, label in (("layernorm_forward", "layernorm fwd"), ("gelu_forward", "gelu fwd"), ("crossentropy", "cross-entropy fwd+bwd")):
        o, t = pick_kernel(ok, name), pick_kernel(tk, name)
        o_ms = num(o.get("ms")) if o else None
        t_ms = num(t.get("ms")) if t else None
        shape = (t or o or {}).get("shape")
        tab.add(f"{label} [{shape}]" if shape else label, fmt_ms(o_ms), fmt_ms(t_ms), speedup(t_ms, o_ms), KERNEL_TARGET)
        if o and t and ints(o.get("shape"))[:2] != ints(t.get("shape"))[:2]:
            tab.notes.append(f"{label}: shapes differ (ours {o.get('shape')}, pytorch {t.get('shape')}): compare with care")

    oa = [a for a in ours.get("attention") or [] if isinstance(a, dict)]
    ta = [a for a in torch_.get("attention") or [] if isinstance(a, dict)]
    key = lambda a: tuple(a.get(k) for k in ("b", "t", "nh", "hs"))
    keys = [key(a) for a in ta] or [key(a) for a in oa] or [(8, 1024, 12, 64)]
    for k in keys:
        o = next((a for a in oa if key(a) == k), None)
        t = next((a for a in ta if key(a) == k), None)
        shape = "x".join(str(v) for v in k)
        for lab, ok_, tk_ in (("fwd", "fused_fwd_ms", "fwd_ms"), ("fwd+bwd", "fused_fwd_bwd_ms", "fwd_bwd_ms")):
            o_ms = num(o.get(ok_)) if o else None
            t_ms = num(t.get(tk_)) if t else None
            tab.add(f"attention {lab} [{shape}]", fmt_ms(o_ms), fmt_ms(t_ms), speedup(t_ms, o_ms), KERNEL_TARGET)

    ot = [s for s in ours.get("train_step") or [] if isinstance(s, dict)]
    tt = [s for s in torch_.get("train_step") or [] if isinstance(s, dict)]
    for batch in (8, 16):
        o = next((s for s in ot if s.get("batch") == batch and s.get("seq", 1024) == 1024), None)
        t = next((s for s in tt if s.get("batch") == batch and s.get("seq", 1024) == 1024), None)
        o_tok = num(o.get("tokens_per_s")) if o else None
        t_tok = num(t.get("tokens_per_s")) if t else None
        ratio = o_tok / t_tok if o_tok is not None and t_tok else None
        label = f"train step B{batch} T1024"
        if t and t.get("compiled") is False:
            label += " (torch eager)"
            tab.notes.append(f"B{batch}: torch.compile failed, PyTorch ran eagerly: {t.get('note', '')}")
        if t and t.get("skipped"):
            tab.notes.append(f"B{batch}: {t['skipped']}")
        if t and t.get("error"):
            tab.notes.append(f"B{batch}: pytorch error: {t['error']}")
        tab.add(label, fmt_tok(o_tok), fmt_tok(t_tok), ratio, TRAIN_TARGET)

    for k in ok:
        if not isinstance(k, dict):
            continue
        frac = num(k.get("frac_copy"))
        gbps = num(k.get("gbps"))
        lab = f"copy ceiling: {k.get('name', '?')}" + (f" {k['dtype']}" if k.get("dtype") else "")
        tab.add(lab, f"{gbps:.0f} GB/s" if gbps is not None else "n/a", "-", frac, COPY_TARGET)
    if not ok:
        tab.add("copy ceiling: (no kernels)", "n/a", "-", None, COPY_TARGET)

    for s in ot:
        mfu = num(s.get("mfu"))
        tf = num(s.get("tflops"))
        pct = None if mfu is None else (mfu * 100 if mfu <= 1.5 else mfu)
        tab.add(f"MFU B{s.get('batch')} T{s.get('seq')}", "n/a" if pct is None else f"{pct:.1f}%",
                "-", None, None, status=f"info ({tf:.0f} TFLOP/s)" if tf is not None else "info")
    return tab


PROFILE_ROWS = 30


def render(rlhf_path, torch_path):
    ours, e1 = load(rlhf_path)
    torch_, e2 = load(torch_path)
    tab = build_table(ours, torch_)
    out = []
    out.append(f"ours: {ours.get('device') or 'n/a'}   pytorch: {torch_.get('torch') or 'n/a'} on {torch_.get('device') or 'n/a'}")
    c = ours.get("ceilings") if isinstance(ours.get("ceilings"), dict) else {}
    cg, gt = num(c.get("copy_gbps")), num(c.get("gemm_bf16_tflops"))
    out.append(f"ceilings (ours): copy {'n/a' if cg is None else f'{cg:.0f} GB/s'}, bf16 GEMM "
               f"{'n/a' if gt is None else f'{gt:.0f} TFLOP/s'}" + (f" ({c['gemm_shape']})" if c.get("gemm_shape") else ""))
    out.append("")
    out.append(tab.render())
    notes = [e for e in (e1, e2) if e] + tab.notes + [f"pytorch: {n}" for n in torch_.get("notes") or []]
    if notes:
        out.append("")
        out += [f"note: {n}" for n in notes]
    prof = [r for r in ours.get("profile") or [] if isinstance(r, dict)]
    if prof:
        out.append("")
        out.append(f"time per kernel (RLHF_CUDA_PROFILE=1), the {min(len(prof), PROFILE_ROWS)} largest of {len(prof)}:")
        out.append(f"  {'kernel':<48} {'calls':>6} {'total ms':>9} {'mean us':>9} {'share':>6}")
        for r in prof[:PROFILE_ROWS]:
            tot, mean, share = num(r.get("total_ms")), num(r.get("mean_us")), num(r.get("share"))
            out.append(f"  {str(r.get('kernel'))[:48]:<48} {r.get('calls', '?'):>6} "
                       f"{'n/a' if tot is None else f'{tot:.3f}':>9} {'n/a' if mean is None else f'{mean:.1f}':>9} "
                       f"{'n/a' if share is None else f'{100 * share:.1f}%':>6}")
    out.append("")
    if tab.misses:
        out.append(f"{tab.misses} of {tab.misses + tab.passes} compared rows miss their target")
    elif tab.passes:
        out.append(f"all {tab.passes} compared rows meet their target")
    else:
        out.append("nothing to compare (see the notes)")
    return "\n".join(out), tab


def selftest():
    ours = {
        "device": "NVIDIA H200 (fake)",
        "ceilings": {"copy_gbps": 4300.0, "gemm_bf16_tflops": 780.0, "gemm_shape": "8192x8192x8192"},
        "kernels": [
            {"name": "layernorm_forward", "dtype": "bf16", "shape": "8192x768", "ms": 0.0070, "bytes": 25165824, "gbps": 3595.0, "frac_copy": 0.836},
            {"name": "gelu_forward", "dtype": "bf16", "shape": "8192x3072", "ms": 0.0260, "bytes": 100663296, "gbps": 3871.7, "frac_copy": 0.90},
            {"name": "crossentropy", "dtype": "bf16", "shape": "8192x50304", "ms": 0.42, "bytes": 1648361472, "gbps": 3924.7, "frac_copy": 0.91},
            {"name": "adamw", "dtype": "f32", "shape": "124M", "ms": 0.5, "bytes": 1, "gbps": 3900.0, "frac_copy": 0.9},
        ],
        "attention": [{"b": 8, "t": 1024, "nh": 12, "hs": 64, "fused_fwd_ms": 0.040, "fused_fwd_bwd_ms": 0.150,
                       "unfused_fwd_ms": 0.2, "fused_fwd_tflops": 322.0, "fused_fwd_bwd_tflops": 300.0, "speedup_fwd_vs_unfused": 5.0}],
        "train_step": [{"batch": 8, "seq": 1024, "median_ms": 20.0, "tokens_per_s": 409600.0, "tflops": 360.0, "mfu": 0.45}],
        "profile": [{"kernel": "gemm 8192x2304x768", "calls": 36, "total_ms": 3.5, "mean_us": 97.2, "share": 0.41}],
    }
    torch_ = {
        "device": "NVIDIA H200 (fake)", "torch": "0.0-fake",
        "kernels": [
            {"name": "layernorm_forward", "shape": "8192x768", "ms": 0.0080, "bytes": 25165824, "gbps": 3145.7},
            {"name": "gelu_forward", "shape": "8192x3072", "ms": 0.0250, "bytes": 100663296, "gbps": 4026.5},
        ],
        "attention": [{"b": 8, "t": 1024, "nh": 12, "hs": 64, "fwd_ms": 0.045, "fwd_bwd_ms": 0.160, "fwd_tflops": 286.0, "fwd_bwd_tflops": 282.0}],
        "train_step": [{"batch": 8, "seq": 1024, "ms": 25.0, "tokens_per_s": 327680.0, "compiled": True},
                       {"batch": 16, "seq": 1024, "skipped": "out of time"}],
        "notes": ["fake"],
    }
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "ours.json"), os.path.join(d, "torch.json")
        with open(a, "w") as f:
            json.dump(ours, f)
        with open(b, "w") as f:
            json.dump(torch_, f)
        text, tab = render(a, b)
        print(text)
        rows = {r[0]: r for r in tab.rows}
        assert rows["layernorm fwd [8192x768]"][3] == "1.14x" and rows["layernorm fwd [8192x768]"][5] == "PASS", rows["layernorm fwd [8192x768]"]
        assert rows["gelu fwd [8192x3072]"][5] == "MISS"
        assert rows["cross-entropy fwd+bwd [8192x50304]"][2] == "n/a" and rows["cross-entropy fwd+bwd [8192x50304]"][5] == "n/a"
        assert rows["attention fwd [8x1024x12x64]"][3] == "1.12x"
        assert rows["train step B8 T1024"][3] == "1.25x" and rows["train step B8 T1024"][5] == "PASS"
        assert rows["train step B16 T1024"][3] == "n/a"
        assert rows["copy ceiling: layernorm_forward bf16"][5] == "MISS"
        assert rows["copy ceiling: gelu_forward bf16"][5] == "PASS"
        assert rows["MFU B8 T1024"][1] == "45.0%"
        assert tab.misses == 2, tab.misses
        assert "gemm 8192x2304x768" in text and "41.0%" in text, text
        # Missing and broken inputs: everything n/a, nothing raises.
        with open(b, "w") as f:
            f.write("{not json")
        text2, tab2 = render(os.path.join(d, "missing.json"), b)
        print()
        print(text2)
        assert "n/a" in text2 and tab2.misses == 0
        # Wrong types inside: still renders.
        with open(a, "w") as f:
            json.dump({"kernels": [1, {"name": "gelu_forward", "ms": "x"}], "attention": {}, "train_step": [None]}, f)
        render(a, b)
    print("\ngpu_table selftest: ok")
    return 0


def main(argv):
    if argv[1:] == ["--selftest"]:
        return selftest()
    args = [a for a in argv[1:] if a != "--strict"]
    if len(args) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    text, tab = render(args[0], args[1])
    print(text)
    return 1 if "--strict" in argv and tab.misses else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
