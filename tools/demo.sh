#!/usr/bin/env bash
# The main job: the pipeline on the demo task, end to end, on the CPU when no GPU is usable.
#   bash tools/demo.sh            (writes everything under runs/demo; DEVICE=cuda|cpu|auto, default auto)
# Each stage prints the numbers that show it worked.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
DEVICE=${DEVICE:-auto}
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
mkdir -p "$OUT"
rm -rf "$OUT/pretrain"

echo "== 0a. tokenizer: byte-level BPE trained on Jane Austen's novels (public domain, data/corpus)"
rlhf tokenizer train --input data/corpus/austen.txt.gz --vocab-size 4096 --out "$OUT/tokenizer.json"
echo "== 0b. token shards"
rlhf prepare --tokenizer "$OUT/tokenizer.json" --input data/corpus/austen.txt.gz --out "$OUT/tokens"
echo "== 0c. pretrain the tiny preset"
rlhf pretrain --device "$DEVICE" --data "$OUT/tokens" --out "$OUT/pretrain" --preset tiny \
  --steps 600 --batch 16 --seq 128 --lr 2e-3 --warmup 30 --eval-every 100 --save-every 200
echo "== 0d. samples from the pretrained model"
rlhf sample --device "$DEVICE" --checkpoint "$OUT/pretrain" --tokenizer "$OUT/tokenizer.json" \
  --prompt "It is a truth universally acknowledged" --num-samples 2 --max-new-tokens 60
