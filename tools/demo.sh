#!/usr/bin/env bash
# The main job: the whole pipeline on the demo task, end to end, on the CPU when no GPU is usable.
#   bash tools/demo.sh        (everything under runs/demo; DEVICE=cuda|cpu|auto, default auto)
# The task: continue a Jane Austen passage; the labeller (a fixed "gold" judge, the VADER sentiment
# lexicon) prefers cheerful continuations. See docs/demo.md. Each stage prints the numbers that show it
# worked; the last one prints the win rate of the PPO policy against the SFT model.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
DEVICE=${DEVICE:-auto}
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
rm -rf "$OUT"
mkdir -p "$OUT"
T0=$SECONDS
stage() { echo; echo "== [$((SECONDS - T0)) s] $*"; }

stage "0. tokenizer (byte-level BPE) and token shards from Austen's novels (public domain, data/corpus)"
rlhf tokenizer train --input data/corpus/austen.txt.gz --vocab-size 4096 --out "$OUT/tokenizer.json"
rlhf prepare --tokenizer "$OUT/tokenizer.json" --input data/corpus/austen.txt.gz --out "$OUT/tokens"
TOK=(--tokenizer "$OUT/tokenizer.json")

stage "0. pretrain the tiny preset (val loss vs the unigram baseline)"
rlhf pretrain --device "$DEVICE" --data "$OUT/tokens" --out "$OUT/pretrain" --preset tiny \
  --steps 600 --batch 16 --seq 128 --lr 2e-3 --warmup 30 --eval-every 100 --save-every 200
rlhf sample --device "$DEVICE" --checkpoint "$OUT/pretrain" "${TOK[@]}" \
  --prompt "It is a truth universally acknowledged" --num-samples 2 --max-new-tokens 40

stage "demo data: SFT demonstrations and prompts cut from the corpus"
rlhf demo-data --corpus data/corpus/austen.txt.gz --out "$OUT/data" --prompts 1200

stage "1. SFT (held-out answer loss: base model vs fine-tuned)"
rlhf sft --device "$DEVICE" --base "$OUT/pretrain" --data "$OUT/data/sft.jsonl" "${TOK[@]}" --out "$OUT/sft" \
  --epochs 2 --batch 16 --lr 5e-4

stage "2a. K = 4 answers per prompt from the SFT model, ranked by the gold judge"
rlhf label --device "$DEVICE" --policy "$OUT/sft" --prompts "$OUT/data/prompts.jsonl" "${TOK[@]}" -k 4 \
  --judge lexicon --max-new-tokens 32 --out "$OUT/ranked.jsonl"

stage "2b. reward model (held-out pairwise accuracy against the gold judge)"
rlhf reward --device "$DEVICE" --base "$OUT/sft" --data "$OUT/ranked.jsonl" "${TOK[@]}" \
  --sft-data "$OUT/data/sft.jsonl" --out "$OUT/reward" --epochs 2 --lr 1e-3 --prompts-per-step 4 --skip-bad

stage "3. PPO against the reward model (score up, KL to SFT bounded)"
rlhf ppo --device "$DEVICE" --policy "$OUT/sft" --reward "$OUT/reward" --prompts "$OUT/data/prompts.jsonl" "${TOK[@]}" \
  --out "$OUT/ppo" --judge lexicon --max-new-tokens 32 --init-kl-coef 0.2 --horizon 1000

stage "evaluation on held-out prompts: PPO policy vs SFT model"
rlhf eval --device "$DEVICE" --policy "$OUT/ppo" --sft "$OUT/sft" --reward "$OUT/reward" \
  --prompts "$OUT/data/heldout.jsonl" "${TOK[@]}" --judge lexicon --max-new-tokens 32 --ppo-run "$OUT/ppo"
stage "done: plots in $OUT/*/ (*.svg), metrics in $OUT/*/metrics.jsonl"
