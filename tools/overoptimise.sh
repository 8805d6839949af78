#!/usr/bin/env bash
# Over-optimisation (Gao et al. 2022): PPO from the demo's SFT model against its reward model with a weak,
# fixed KL coefficient and many iterations, the gold judge scoring the rollouts every few iterations; then the
# held-out evaluation of the result and the curve of gold and proxy score against sqrt(KL to SFT).
#   bash tools/overoptimise.sh      (after tools/demo.sh; reads runs/demo, writes runs/demo/overopt*)
# Environment: OUT (the demo's folder, default runs/demo), ITERS (default 150), BETA (default 0.005),
#   GOLD_EVERY (default 5), DEVICE (default auto).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
ITERS=${ITERS:-150}
BETA=${BETA:-0.005}
GOLD_EVERY=${GOLD_EVERY:-5}
DEVICE=${DEVICE:-auto}
MAX_NEW=32
for need in sft reward data/ppo-prompts.jsonl data/heldout.jsonl; do
  [ -e "$OUT/$need" ] || { echo "$OUT/$need is missing: run tools/demo.sh first" >&2; exit 1; }
done
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
BASE=data/demo/base
[ -e "$OUT/pretrain/latest" ] && BASE="$OUT/pretrain"
RUN="$OUT/overopt-ppo"
if [ -e "$RUN/latest" ]; then resume=(--resume); else resume=(); fi

echo "== PPO with a fixed KL coefficient of $BETA for $ITERS iterations (gold scored every $GOLD_EVERY)"
rlhf ppo --device "$DEVICE" --policy "$OUT/sft" --reward "$OUT/reward" --prompts "$OUT/data/ppo-prompts.jsonl" \
  --out "$RUN" --judge gold --max-new-tokens "$MAX_NEW" --init-kl-coef "$BETA" --fixed-kl \
  --iterations "$ITERS" --gold-every "$GOLD_EVERY" --sample-every 25 "${resume[@]}"

echo "== the over-optimised policy on the held-out prompts, and the curve"
rlhf eval --device "$DEVICE" --policy "$RUN" --sft "$OUT/sft" --reward "$OUT/reward" --base "$BASE" \
  --prompts "$OUT/data/heldout.jsonl" --judge gold --max-new-tokens "$MAX_NEW" \
  --ppo-run "$RUN" --out "$OUT/overopt-eval"
rlhf report --run "$OUT"
