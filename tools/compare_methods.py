"""The steps-3 alternatives compared on the demo task: for each method, the gold judge's win rate of its policy
against the SFT model on the held-out prompts (95% interval over prompts), its mean gold score, its KL to
SFT and the wall time of its training (what `METHODS="ppo dpo" bash tools/demo.sh` writes; the evaluation of
each is `rlhf eval`'s eval.json).
Usage: python3 tools/compare_methods.py OUT METHOD [METHOD ...]   (prints a markdown table)
"""
import json
import pathlib
import sys


def eval_dir(out, method):
    # PPO's evaluation is the demo's own (runs/demo/eval); every other method's is eval-METHOD.
    return out / ("eval" if method == "ppo" else f"eval-{method}")


def fmt(estimate, scale=1.0, unit=""):
    if estimate is None:
        return "-"
    return f"{scale * estimate['mean']:.1f}{unit} ± {scale * estimate['ci95']:.1f}"


def main():
    out, methods = pathlib.Path(sys.argv[1]), sys.argv[2:]
    rows = []
    sft = None
    for m in methods:
        report = json.loads((eval_dir(out, m) / "eval.json").read_text())
        systems = {s["name"]: s for s in report["systems"]}
        policy = systems["policy"]
        sft = sft or systems["SFT"]
        seconds = int((out / m / "train-seconds").read_text())
        rows.append((m.upper(), policy, f"{seconds // 60} min {seconds % 60:02d} s"))
    print(f"| method | gold win rate vs SFT | mean gold score | KL to SFT (nats/answer) | training wall time |")
    print("|---|---:|---:|---:|---:|")
    print(f"| SFT (the start of each) | 50% (itself) | {fmt(sft['gold'])} | 0 | - |")
    for name, p, wall in rows:
        kl = "-" if p["kl_to_sft"] is None else f"{p['kl_to_sft']:.1f}"
        print(f"| {name} | {fmt(p['win_vs_sft'], 100, '%')} | {fmt(p['gold'])} | {kl} | {wall} |")


if __name__ == "__main__":
    main()
