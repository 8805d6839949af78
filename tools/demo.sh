#!/usr/bin/env bash
# The main job: the whole pipeline on the demo task, end to end, on the CPU when no GPU is usable.
#   bash tools/demo.sh        (everything under runs/demo; DEVICE=cuda|cpu|auto, default auto;
#                              METHODS="ppo dpo grpo rloo" adds DPO, GRPO and RLOO on the same SFT model and
#                              labels and compares them; PRESET=llama-tiny runs the pipeline on a Llama-family
#                              model pretrained here first, as PRETRAIN=1 does for the default tiny GPT-2)
# The task: continue a Jane Austen passage; the labeller is the built-in gold judge, a fixed stand-in for a
# person who prefers continuations that are fluent, on the passage's subject and cheerful (docs/demo.md).
# Each stage prints the numbers that show it worked; the evaluation compares the PPO policy with the SFT
# model, Austen's own continuations and two baselines, with 95% intervals, and writes its tables and the
# side-by-side samples to runs/demo/eval/.
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
MAX_NEW=32

stage "demo data: passages of Austen's novels; the evaluation pool (one paragraph in ten) is kept out of everything trained"
rlhf demo-data --corpus data/corpus/austen.txt.gz --out "$OUT/data"

PRESET=${PRESET:-tiny}
# The shipped base (data/demo/base) is the tiny GPT-2: any other preset is pretrained here.
[ "$PRESET" = tiny ] || PRETRAIN=1
if [ "${PRETRAIN:-0}" = 1 ]; then
  stage "0. tokenizer (byte-level BPE) and token shards of the training text (the evaluation pool left out)"
  rlhf tokenizer train --input "$OUT/data/pretrain.txt" --vocab-size 4096 --out "$OUT/tokenizer.json"
  rlhf prepare --tokenizer "$OUT/tokenizer.json" --input "$OUT/data/pretrain.txt" --out "$OUT/tokens"
  stage "0. pretrain the $PRESET preset as tools/train-shipped-model.sh base does (val loss vs the unigram baseline; ~25 min)"
  rlhf pretrain --device "$DEVICE" --data "$OUT/tokens" --out "$OUT/pretrain" --preset "$PRESET" \
    --steps 1500 --batch 32 --seq 128 --lr 2e-3 --warmup 100 --eval-every 100 --save-every 250
  BASE="$OUT/pretrain"
else
  stage "0. the pretrained base: data/demo/base, the tiny preset trained on the training text to a validation loss of 4.08 (data/demo/SOURCE.md; PRETRAIN=1 trains it here)"
  BASE=data/demo/base
fi
rlhf sample --device "$DEVICE" --checkpoint "$BASE" \
  --prompt "It is a truth universally acknowledged" --num-samples 2 --max-new-tokens 40

stage "1. SFT on 2000 demonstrations (held-out answer loss: base model vs fine-tuned)"
rlhf sft --device "$DEVICE" --base "$BASE" --data "$OUT/data/sft.jsonl" --out "$OUT/sft" \
  --epochs 2 --batch 16 --lr 5e-4

stage "2a. K = 4 answers per reward-model prompt from the SFT model, ranked by the gold judge"
rlhf label --device "$DEVICE" --policy "$OUT/sft" --prompts "$OUT/data/rm-prompts.jsonl" -k 4 \
  --judge gold --max-new-tokens "$MAX_NEW" --out "$OUT/ranked.jsonl"

stage "2b. reward model (held-out pairwise accuracy against the gold judge)"
rlhf reward --device "$DEVICE" --base "$OUT/sft" --data "$OUT/ranked.jsonl" \
  --sft-data "$OUT/data/sft.jsonl" --out "$OUT/reward" --epochs 2 --lr 1e-3 --prompts-per-step 4 --skip-bad

# METHODS="ppo dpo grpo rloo" runs every listed alternative for step 3 from the same SFT model and the same labels,
# times and evaluates each, and writes the comparison table to $OUT/compare.md (docs/demo.md).
for m in ${METHODS:-ppo}; do
  t0=$SECONDS
  case $m in
    ppo)
      stage "3. PPO on its own prompts against the reward model (score up, KL to SFT bounded; gold scored every 5 iterations)"
      rlhf ppo --device "$DEVICE" --policy "$OUT/sft" --reward "$OUT/reward" --prompts "$OUT/data/ppo-prompts.jsonl" \
        --out "$OUT/ppo" --judge gold --max-new-tokens "$MAX_NEW" --init-kl-coef 0.2 --horizon 1000 ;;
    dpo)
      stage "3. DPO on the reward model's labels (every untied pair of the K = 4 ranked answers) against the SFT model"
      rlhf dpo --device "$DEVICE" --base "$OUT/sft" --data "$OUT/ranked.jsonl" --out "$OUT/dpo" \
        --lr 3e-4 --beta 0.1 --epochs 2 --skip-bad ;;
    grpo)
      stage "3. GRPO on PPO's prompts against the reward model: 8 prompts x 4 answers per iteration, group-normalised advantages, k3 KL in the loss"
      rlhf grpo --device "$DEVICE" --policy "$OUT/sft" --reward "$OUT/reward" --prompts "$OUT/data/ppo-prompts.jsonl" \
        --out "$OUT/grpo" --judge gold --max-new-tokens "$MAX_NEW" --epochs 4 --beta 0.04 ;;
    rloo)
      stage "3. RLOO on PPO's prompts against the reward model: leave-one-out baseline over 4 answers, KL in the reward"
      rlhf grpo --device "$DEVICE" --policy "$OUT/sft" --reward "$OUT/reward" --prompts "$OUT/data/ppo-prompts.jsonl" \
        --out "$OUT/rloo" --judge gold --max-new-tokens "$MAX_NEW" --epochs 4 --baseline loo --kl-in reward --beta 0.05 ;;
    *) echo "unknown method '$m' in METHODS (ppo, dpo, grpo, rloo)" >&2; exit 2 ;;
  esac
  echo $((SECONDS - t0)) >"$OUT/$m/train-seconds"
done

for m in ${METHODS:-ppo}; do
  if [ "$m" = ppo ]; then dir="$OUT/eval"; curve=(--ppo-run "$OUT/ppo"); else dir="$OUT/eval-$m"; curve=(); fi
  stage "4. evaluation on the held-out prompts: ${m^^} vs SFT, Austen, best-of-4 and the best constant answer"
  rlhf eval --device "$DEVICE" --policy "$OUT/$m" --sft "$OUT/sft" --reward "$OUT/reward" --base "$BASE" \
    --prompts "$OUT/data/heldout.jsonl" --judge gold --max-new-tokens "$MAX_NEW" "${curve[@]}" --out "$dir"
done
if [ "$(wc -w <<<"${METHODS:-ppo}")" -gt 1 ]; then
  stage "4b. the methods compared: same SFT model, same labels ($OUT/compare.md)"
  python3 tools/compare_methods.py "$OUT" ${METHODS} | tee "$OUT/compare.md"
fi
stage "5. the report: every stage's numbers, plots and tables on one page"
rlhf report --run "$OUT"
stage "done: open $OUT/report.html (or $OUT/report.md); metrics in $OUT/*/metrics.jsonl"
