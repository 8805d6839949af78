"""PyTorch eager fp32 baseline on the CPU: one GPT-2 124M training step (forward + backward + AdamW) at
batch 4, sequence 64, on 2 threads. Prints the median ms/step and tokens/s over 5 steps after 2 warm-up steps.
Run with the parity venv:  .venv-parity/bin/python tools/bench_torch_cpu.py [--threads 2] [--steps 5]
"""
import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # GPT-2 124M defaults
    model = GPT2LMHeadModel(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, foreach=True)
    x = torch.randint(0, cfg.vocab_size, (a.batch, a.seq + 1))
    inputs, targets = x[:, :-1], x[:, 1:]
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
        print(f"step {i}: loss {loss.item():.4f} {dt * 1e3:.0f} ms")
    med = statistics.median(times)
    print(f"torch {torch.__version__} eager fp32, {a.threads} threads, GPT-2 124M, B={a.batch} T={a.seq}: "
          f"median {med * 1e3:.0f} ms/step, {a.batch * a.seq / med:.0f} tokens/s")


if __name__ == "__main__":
    main()
