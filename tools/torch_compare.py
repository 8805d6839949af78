#!/usr/bin/env python3
"""PyTorch reference timings for the problems `rlhf bench --device cuda --json` times (CUDA, bf16).

Prints ONE JSON object on stdout (progress goes to stderr):
  {"device", "torch", "cuda", "kernels": [{"name", "shape", "ms", "bytes", "gbps", "method"}],
   "attention": [{"b", "t", "nh", "hs", "fwd_ms", "fwd_bwd_ms", "fwd_tflops", "fwd_bwd_tflops", "backends"}],
   "train_step": [{"batch", "seq", "ms", "tokens_per_s", "tflops", "compiled", "note"?}],
   "notes": [...], "elapsed_s"}

Timing: CUDA events; warm-up first; the median of >= 20 timings. Kernels and attention are captured in a CUDA
graph (one replay = one call on each of several input sets, so that the inputs together are several times the
L2 cache and launch gaps do not count); the time per call is the replay's time over the calls in it. A training
step is timed with events around each step (median of >= 10 steps after the warm-up that compiles).

FLOP conventions (the same as rlhf's): causal attention forward = 2*B*NH*T*T*HS (two products of 2*T*T*HS,
halved by the mask), forward+backward = 3.5 times that; a training step = tokens * (6*N + 6*L*C*T).

The whole script stays under --budget-s seconds: a section that would not fit is skipped with a note, and on
SIGTERM (an outer timeout) it prints what it has.
"""
import argparse
import gc
import json
import math
import os
import signal
import statistics
import sys
import time
import traceback

L2_ROTATE_BYTES = 256 << 20  # inputs of one graph replay together: several times an H200's 60 MB L2


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class OutOfTime(Exception):
    pass


def _on_term(signum, _frame):
    raise OutOfTime(f"stopped by signal {signum} (outer time limit)")


def free(torch):
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def median_events(torch, run, reps):
    """Median over `reps` of the event-timed milliseconds of run()."""
    ms = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    return statistics.median(ms)


def time_calls(torch, call, n_calls, reps=25):
    """Milliseconds per call of call(i), i in 0..n_calls: through a CUDA graph, else (capture failed) eagerly."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (library handles, workspaces, lazy init)
            for _ in range(2):
                for i in range(n_calls):
                    call(i)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            keep = [call(i) for i in range(n_calls)]  # distinct outputs, as in a real pass
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        ms = median_events(torch, g.replay, reps) / n_calls
        del keep, g
        return ms, "cuda graph"
    except OutOfTime:
        raise
    except Exception as e:  # noqa: BLE001 - any capture problem: time eagerly instead
        log(f"  graph capture failed ({type(e).__name__}: {e}); timing eagerly")
        torch.cuda.synchronize()

        def eager():
            for i in range(n_calls):
                call(i)

        for _ in range(3):
            eager()
        torch.cuda.synchronize()
        return median_events(torch, eager, reps) / n_calls, f"eager (graph capture failed: {type(e).__name__})"


def n_sets(bytes_per_set):
    return max(2, math.ceil(L2_ROTATE_BYTES / bytes_per_set))


def kernels_section(torch, F, res):
    dev, bf = "cuda", torch.bfloat16
    out = res["kernels"]

    # LayerNorm forward, x [8192, 768]: read x, write y.
    n, c = 8192, 768
    s = n_sets(n * c * 2)
    xs = [torch.randn(n, c, device=dev, dtype=bf) for _ in range(s)]
    w = torch.randn(c, device=dev, dtype=bf)
    b = torch.randn(c, device=dev, dtype=bf)
    ms, how = time_calls(torch, lambda i: F.layer_norm(xs[i], (c,), w, b, 1e-5), s)
    byts = 2 * n * c * 2
    out.append({"name": "layernorm_forward", "shape": f"{n}x{c}", "ms": ms, "bytes": byts, "gbps": byts / ms / 1e6, "method": f"{how}, {s} input sets"})
    log(f"  layernorm_forward {n}x{c}: {ms * 1e3:.1f} us, {byts / ms / 1e6:.0f} GB/s")
    del xs, w, b
    free(torch)

    # GELU (tanh) forward, [8192, 3072]: read x, write y.
    n, c = 8192, 3072
    s = n_sets(n * c * 2)
    xs = [torch.randn(n, c, device=dev, dtype=bf) for _ in range(s)]
    ms, how = time_calls(torch, lambda i: F.gelu(xs[i], approximate="tanh"), s)
    byts = 2 * n * c * 2
    out.append({"name": "gelu_forward", "shape": f"{n}x{c}", "ms": ms, "bytes": byts, "gbps": byts / ms / 1e6, "method": f"{how}, {s} input sets"})
    log(f"  gelu_forward {n}x{c}: {ms * 1e3:.1f} us, {byts / ms / 1e6:.0f} GB/s")
    del xs
    free(torch)

    # Cross-entropy forward + backward to the logits' gradient, logits [8192, 50304] with 50257 real columns.
    # Bytes counted as the fused kernel's: read the logits once, write their gradient once.
    n, vp, v = 8192, 50304, 50257
    logits = torch.randn(n, vp, device=dev, dtype=bf).requires_grad_(True)
    targets = torch.randint(0, v, (n,), device=dev)

    def ce(_i):
        loss = F.cross_entropy(logits[:, :v], targets)
        (g,) = torch.autograd.grad(loss, logits)
        return g

    ms, how = time_calls(torch, ce, 1)
    byts = 2 * n * vp * 2
    out.append({"name": "crossentropy", "shape": f"{n}x{vp} ({v} used)", "ms": ms, "bytes": byts, "gbps": byts / ms / 1e6,
                "method": f"{how}; F.cross_entropy on logits[:, :{v}] + autograd.grad to the full logits (fwd+bwd)"})
    log(f"  crossentropy fwd+bwd {n}x{vp}: {ms:.3f} ms, {byts / ms / 1e6:.0f} GB/s (fused-kernel bytes)")
    del logits, targets
    free(torch)


def attention_section(torch, F, res):
    dev, bf = "cuda", torch.bfloat16
    B, NH, T, HS = 8, 12, 1024, 64
    s = n_sets(3 * B * NH * T * HS * 2)
    qs = [torch.randn(B, NH, T, HS, device=dev, dtype=bf, requires_grad=True) for _ in range(s)]
    ks = [torch.randn(B, NH, T, HS, device=dev, dtype=bf, requires_grad=True) for _ in range(s)]
    vs = [torch.randn(B, NH, T, HS, device=dev, dtype=bf, requires_grad=True) for _ in range(s)]
    dos = [torch.randn(B, NH, T, HS, device=dev, dtype=bf) for _ in range(s)]

    def fwd(i):
        with torch.no_grad():
            return F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=True)

    def fwd_bwd(i):
        o = F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=True)
        return torch.autograd.grad(o, (qs[i], ks[i], vs[i]), dos[i])

    flops_fwd = 2.0 * B * NH * T * T * HS
    entry = {"b": B, "t": T, "nh": NH, "hs": HS}
    ms_f, how = time_calls(torch, fwd, s)
    ms_fb, _ = time_calls(torch, fwd_bwd, s)
    entry.update({"fwd_ms": ms_f, "fwd_bwd_ms": ms_fb, "fwd_tflops": flops_fwd / ms_f / 1e9,
                  "fwd_bwd_tflops": 3.5 * flops_fwd / ms_fb / 1e9, "method": f"{how}, {s} input sets, PyTorch's default backend"})
    log(f"  sdpa causal {B}x{NH}x{T}x{HS}: fwd {ms_f:.4f} ms ({entry['fwd_tflops']:.0f} TFLOP/s), "
        f"fwd+bwd {ms_fb:.4f} ms ({entry['fwd_bwd_tflops']:.0f} TFLOP/s)")
    # Each backend on its own, for information (the table compares with the default above).
    backends = {}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
            be = getattr(SDPBackend, name, None)
            if be is None:
                continue
            try:
                with sdpa_kernel([be]):
                    f_ms, _ = time_calls(torch, fwd, s)
                    fb_ms, _ = time_calls(torch, fwd_bwd, s)
                backends[name.lower()] = {"fwd_ms": f_ms, "fwd_bwd_ms": fb_ms}
                log(f"    {name.lower()}: fwd {f_ms:.4f} ms, fwd+bwd {fb_ms:.4f} ms")
            except OutOfTime:
                raise
            except Exception as e:  # noqa: BLE001 - a backend not available for this shape or build
                backends[name.lower()] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    except ImportError as e:
        backends["error"] = str(e)
    entry["backends"] = backends
    res["attention"].append(entry)
    del qs, ks, vs, dos
    free(torch)


def gpt2(torch, vocab=50304, n_layer=12, n_head=12, n_embd=768, block=1024):
    nn, F = torch.nn, torch.nn.functional

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.c_attn(x).split(c, dim=2)
            q, k, v = (z.view(b, t, n_head, c // n_head).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(n_embd, 4 * n_embd)
            self.c_proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(n_embd)
            self.mlp = Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Gpt2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, n_embd)
            self.wpe = nn.Embedding(block, n_embd)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab, bias=False)
            self.lm_head.weight = self.wte.weight  # tied
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

        def forward(self, idx, targets):
            t = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
            for blk in self.h:
                x = blk(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return Gpt2()


def dynamo_reset(torch):
    """Forget compiled graphs, so that the next batch size compiles with static shapes again."""
    try:
        import torch._dynamo

        torch._dynamo.reset()
    except Exception as e:  # noqa: BLE001
        log(f"  torch._dynamo.reset failed: {e}")


def train_one(torch, batch, seq, steps, warmup):
    """Times `steps` training steps after `warmup`; returns the entry (compiled, else eager with a note)."""
    torch.manual_seed(0)
    model = gpt2(torch).cuda()
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    x = torch.randint(0, 50257, (batch, seq), device="cuda")
    y = torch.randint(0, 50257, (batch, seq), device="cuda")
    entry = {"batch": batch, "seq": seq, "compiled": True}

    def make_step(fwd):
        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return step

    t0 = time.monotonic()
    try:
        step = make_step(torch.compile(model, dynamic=False))
        for _ in range(warmup):
            loss = step()
        torch.cuda.synchronize()
    except OutOfTime:
        raise
    except Exception as e:  # noqa: BLE001 - torch.compile failed: the eager model instead
        log(f"  torch.compile failed: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stderr)
        entry["compiled"] = False
        entry["note"] = f"torch.compile failed, eager instead: {type(e).__name__}: {str(e)[:400]}"
        dynamo_reset(torch)
        opt.zero_grad(set_to_none=True)
        step = make_step(model)
        for _ in range(warmup):
            loss = step()
        torch.cuda.synchronize()
    entry["warmup_s"] = time.monotonic() - t0
    log(f"  B={batch} T={seq}: warm-up ({warmup} steps{', compiling' if entry['compiled'] else ''}) {entry['warmup_s']:.1f} s")

    times = []
    w0 = time.monotonic()
    for _ in range(steps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step()
        b.record()
        times.append((a, b))
    torch.cuda.synchronize()
    wall = (time.monotonic() - w0) / steps
    ms = statistics.median(a.elapsed_time(b) for a, b in times)
    tokens = batch * seq
    flops = tokens * (6.0 * n_params + 6.0 * 12 * 768 * seq)
    entry.update({"ms": ms, "tokens_per_s": tokens / ms * 1e3, "tflops": flops / ms / 1e9, "steps": steps,
                  "wall_ms_per_step": wall * 1e3, "params": n_params, "loss_last": float(loss.item())})
    log(f"  B={batch} T={seq}: {ms:.2f} ms/step (wall {wall * 1e3:.2f}), {entry['tokens_per_s']:.0f} tokens/s, "
        f"{entry['tflops']:.0f} TFLOP/s, loss {entry['loss_last']:.3f}")
    del model, opt, x, y, step, times
    dynamo_reset(torch)
    free(torch)
    return entry


def train_section(torch, res, batches, seq, steps, warmup, deadline):
    last = None
    for batch in batches:
        left = deadline - time.monotonic()
        # The next batch compiles again (static shapes): it needs about what the last one took.
        need = 1.1 * last if last is not None else 20.0
        if left < need:
            msg = f"train_step B={batch}: skipped, {left:.0f} s left of the budget and about {need:.0f} s needed"
            log("  " + msg)
            res["notes"].append(msg)
            res["train_step"].append({"batch": batch, "seq": seq, "skipped": msg})
            continue
        t0 = time.monotonic()
        try:
            res["train_step"].append(train_one(torch, batch, seq, steps, warmup))
        except OutOfTime:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report it and go on
            traceback.print_exc(file=sys.stderr)
            res["train_step"].append({"batch": batch, "seq": seq, "error": f"{type(e).__name__}: {str(e)[:400]}"})
            free(torch)
        last = time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=115.0, help="time limit for the whole script (default 115)")
    ap.add_argument("--sections", default="kernels,attention,train", help="comma-separated subset")
    ap.add_argument("--batches", default="8,16", help="training-step batch sizes (seq 1024)")
    ap.add_argument("--steps", type=int, default=12, help="timed training steps (>= 10)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up training steps (the first compiles)")
    args = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + args.budget_s

    # stdout carries only the JSON: anything printed by libraries goes to stderr.
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, _on_term)

    res = {"device": None, "torch": None, "cuda": None, "kernels": [], "attention": [], "train_step": [], "notes": []}
    rc = 0
    try:
        import torch
        import torch.nn.functional as F

        res["torch"] = torch.__version__
        res["cuda"] = torch.version.cuda
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        res["device"] = torch.cuda.get_device_name()
        p = torch.cuda.get_device_properties(0)
        res["sm_count"] = p.multi_processor_count
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {res['device']}, {p.multi_processor_count} SMs")
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        for name, fn in (("kernels", lambda: kernels_section(torch, F, res)),
                         ("attention", lambda: attention_section(torch, F, res))):
            if name not in sections:
                continue
            if time.monotonic() > deadline - 5:
                res["notes"].append(f"{name}: skipped, out of time")
                continue
            log(f"[{name}] at {time.monotonic() - t_start:.1f} s")
            try:
                fn()
            except OutOfTime:
                raise
            except Exception as e:  # noqa: BLE001 - keep going with the other sections
                traceback.print_exc(file=sys.stderr)
                res["notes"].append(f"{name}: {type(e).__name__}: {str(e)[:400]}")
                rc = 1
                free(torch)
        if "train" in sections:
            log(f"[train_step] at {time.monotonic() - t_start:.1f} s")
            batches = [int(b) for b in args.batches.split(",") if b.strip()]
            train_section(torch, res, batches, 1024, max(args.steps, 10), max(args.warmup, 1), deadline)
    except OutOfTime as e:
        res["notes"].append(str(e))
        log(str(e))
        rc = 1
    except Exception as e:  # noqa: BLE001 - no torch, no GPU: still print the JSON
        traceback.print_exc(file=sys.stderr)
        res["notes"].append(f"{type(e).__name__}: {str(e)[:400]}")
        rc = 1
    res["elapsed_s"] = time.monotonic() - t_start
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    json_out.write(json.dumps(res, indent=1) + "\n")
    json_out.flush()
    log(f"done in {res['elapsed_s']:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
