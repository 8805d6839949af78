"""The workload of `rlhf bench --section generation` through Hugging Face transformers, for comparison.

GPT2LMHeadModel at GPT-2 124M shapes (random init, vocab 50257, 12 layers, 768 wide, 1024 context), fp32
on the CPU, `generate(do_sample=True, top_k=0, max_new_tokens=N, min_new_tokens=N, use_cache=True)` on
random prompts of `--prompt-len` tokens (no stop token reachable, so every row produces N tokens). Prints
new tokens/s over the whole call (prefill included) and the ms per decode step
((total - prefill) / (N - 1), the prefill timed as a 1-token generate of the same batch).

    .venv-parity/bin/python tools/bench_generate_torch.py --threads 2 --batch 1,16,64
"""

import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1,16,64", help="batch sizes, comma-separated")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    model = GPT2LMHeadModel(cfg).eval()

    def run(ids, n):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                temperature=1.0,
                max_new_tokens=n,
                min_new_tokens=n,
                use_cache=True,
                pad_token_id=0,
            )
        dt = time.perf_counter() - t0
        assert out.shape[1] == ids.shape[1] + n, out.shape
        return dt

    rows = []
    for b in (int(x) for x in args.batch.split(",")):
        ids = torch.randint(0, cfg.vocab_size, (b, args.prompt_len))
        prefill = run(ids, 1)
        total = run(ids, args.new_tokens)
        rows.append(
            {
                "batch": b,
                "tokens_per_s": b * args.new_tokens / total,
                "step_ms": (total - prefill) / max(args.new_tokens - 1, 1) * 1e3,
                "prefill_ms": prefill * 1e3,
                "total_ms": total * 1e3,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, fp32, "
        f"{args.threads} threads: prompt {args.prompt_len} tokens, {args.new_tokens} new tokens"
    )
    print(f"  {'batch':>5}  {'new tokens/s':>12}  {'ms per step':>11}  {'prefill ms':>10}  {'total s':>9}")
    for r in rows:
        print(
            f"  {r['batch']:>5}  {r['tokens_per_s']:>12.1f}  {r['step_ms']:>11.2f}  "
            f"{r['prefill_ms']:>10.1f}  {r['total_ms'] / 1e3:>9.2f}"
        )


if __name__ == "__main__":
    main()
