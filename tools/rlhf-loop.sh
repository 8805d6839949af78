#!/usr/bin/env bash
# The iterated RLHF loop (InstructGPT steps 2-3, repeated): per round
#   1. sample K answers per prompt from the current policy and rank them with the judge   (rlhf label)
#   2. retrain the reward model on all labels so far, warm-started from the last one     (rlhf reward)
#   3. continue PPO from the current policy against the new reward model, KL-anchored to SFT (rlhf ppo)
#
# Usage: tools/rlhf-loop.sh SFT_CKPT RM_CKPT PROMPTS.jsonl TOKENIZER.json JUDGE_CMD OUT_DIR [ROUNDS] [ITERS]
# Environment: RLHF (the binary, default target/release/rlhf), K (answers per prompt, default 4),
#   RM_TRAIN (the reward-model training command, default `rlhf reward --skip-bad`; it receives
#   --base PREV_RM --data LABELS --out DIR --tokenizer TOK), PPO_ARGS (extra flags for rlhf ppo).
# Every step resumes: a round whose outputs exist is skipped, a label file continues where it stopped.
set -euo pipefail
if [ $# -lt 6 ]; then
  sed -n 2,12p "$0"; exit 2
fi
SFT=$1 RM=$2 PROMPTS=$3 TOK=$4 JUDGE=$5 OUT=$6 ROUNDS=${7:-3} ITERS=${8:-20}
RLHF=${RLHF:-target/release/rlhf}
K=${K:-4}
RM_TRAIN=${RM_TRAIN:-"$RLHF reward --skip-bad"}
mkdir -p "$OUT"
policy=$SFT
rm_ckpt=$RM
for r in $(seq 1 "$ROUNDS"); do
  d="$OUT/round-$r"
  mkdir -p "$d"
  echo "== round $r: labelling with $policy"
  $RLHF label --policy "$policy" --prompts "$PROMPTS" --tokenizer "$TOK" -k "$K" --judge "$JUDGE" --out "$d/labels.jsonl"
  cat "$OUT"/round-*/labels.jsonl > "$OUT/labels-all.jsonl"
  if [ ! -e "$d/rm.done" ]; then
    echo "== round $r: reward model from $rm_ckpt on $(wc -l < "$OUT/labels-all.jsonl") ranked prompts"
    if [ -e "$d/rm/latest" ]; then rm_resume=--resume; else rm_resume=; fi
    # shellcheck disable=SC2086
    $RM_TRAIN --base "$rm_ckpt" --data "$OUT/labels-all.jsonl" --out "$d/rm" --tokenizer "$TOK" $rm_resume
    touch "$d/rm.done"
  fi
  rm_ckpt="$d/rm"
  echo "== round $r: PPO from $policy against $rm_ckpt"
  if [ -e "$d/ppo/latest" ]; then resume=--resume; else resume=; fi
  # shellcheck disable=SC2086
  $RLHF ppo --policy "$policy" --reference "$SFT" --reward "$rm_ckpt" --prompts "$PROMPTS" --tokenizer "$TOK" \
    --judge "$JUDGE" --iterations "$ITERS" --out "$d/ppo" $resume ${PPO_ARGS:-}
  policy="$d/ppo"
done
echo "final policy: $policy"
