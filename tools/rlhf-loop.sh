#!/usr/bin/env bash
# The iterated RLHF loop (InstructGPT steps 2-3, repeated): per round
#   1. sample K answers per prompt from the current policy and rank them with the judge   (rlhf label)
#   2. retrain the reward model on all labels so far, warm-started from the last one     (rlhf reward)
#   3. continue PPO from the current policy against the new reward model, KL-anchored to SFT (rlhf ppo)
#
# Usage: tools/rlhf-loop.sh SFT_CKPT RM_CKPT PROMPTS.jsonl JUDGE_CMD OUT_DIR [ROUNDS] [ITERS]
# Environment: RLHF (the binary, default target/release/rlhf), K (answers per prompt, default 4),
#   RM_TRAIN (the reward-model training command, default `rlhf reward --skip-bad`; it receives
#   --base PREV_RM --data LABELS --out DIR), PPO_ARGS (extra flags for rlhf ppo), TOKENIZER (a
#   tokenizer.json for checkpoints that store none; by default every step takes the one stored with them).
# Every step resumes: a round whose outputs exist is skipped, a label file continues where it stopped.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n 2,13p "$0"; exit 2
fi
SFT=$1 RM=$2 PROMPTS=$3 JUDGE=$4 OUT=$5 ROUNDS=${6:-3} ITERS=${7:-20}
TOK=()
if [ -n "${TOKENIZER:-}" ]; then TOK=(--tokenizer "$TOKENIZER"); fi
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
  $RLHF label --policy "$policy" --prompts "$PROMPTS" "${TOK[@]}" -k "$K" --judge "$JUDGE" --out "$d/labels.jsonl"
  cat "$OUT"/round-*/labels.jsonl > "$OUT/labels-all.jsonl"
  if [ ! -e "$d/rm.done" ]; then
    echo "== round $r: reward model from $rm_ckpt on $(wc -l < "$OUT/labels-all.jsonl") ranked prompts"
    if [ -e "$d/rm/latest" ]; then rm_resume=--resume; else rm_resume=; fi
    # shellcheck disable=SC2086
    $RM_TRAIN --base "$rm_ckpt" --data "$OUT/labels-all.jsonl" --out "$d/rm" "${TOK[@]}" $rm_resume
    touch "$d/rm.done"
  fi
  rm_ckpt="$d/rm"
  echo "== round $r: PPO from $policy against $rm_ckpt"
  if [ -e "$d/ppo/latest" ]; then resume=--resume; else resume=; fi
  # shellcheck disable=SC2086
  $RLHF ppo --policy "$policy" --reference "$SFT" --reward "$rm_ckpt" --prompts "$PROMPTS" "${TOK[@]}" \
    --judge "$JUDGE" --iterations "$ITERS" --out "$d/ppo" $resume ${PPO_ARGS:-}
  policy="$d/ppo"
done
echo "final policy: $policy"
