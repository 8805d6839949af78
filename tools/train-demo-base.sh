#!/usr/bin/env bash
# Rebuilds the demo's pretrained policy base (data/demo/base/: model.safetensors, config.json, tokenizer.json):
# the tiny preset trained on the demo's pretrain.txt (the corpus without the evaluation pool) long enough to
# write Austen-like sentences, which a 15-minute demo on 2 cores cannot afford to do itself:
#   bash tools/train-demo-base.sh [WORK_DIR]        (default /tmp/demo-base; about 25 min on 2 cores)
# data/demo/SOURCE.md records the result; tools/demo.sh starts from it (PRETRAIN=1 trains a base there instead).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/demo-base}
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
rm -rf "$W"
mkdir -p "$W"
rlhf demo-data --corpus data/corpus/austen.txt.gz --out "$W/data"
rlhf tokenizer train --input "$W/data/pretrain.txt" --vocab-size 4096 --out "$W/tokenizer.json"
rlhf prepare --tokenizer "$W/tokenizer.json" --input "$W/data/pretrain.txt" --out "$W/tokens"
rlhf pretrain --device cpu --data "$W/tokens" --out "$W/base" --preset tiny --steps 1500 --batch 32 --seq 128 \
  --lr 2e-3 --warmup 100 --eval-every 100 --save-every 250
rm -rf data/demo/base
rlhf export --checkpoint "$W/base" --out data/demo/base
sha256sum data/demo/base/*
