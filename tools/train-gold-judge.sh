#!/usr/bin/env bash
# Rebuilds the gold judge's language model (data/judge/gold/: model.safetensors, config.json,
# tokenizer.json) from the corpus, as described in data/judge/SOURCE.md:
#   bash tools/train-gold-judge.sh [WORK_DIR]        (default /tmp/gold-judge; about 25 min on 2 cores)
# The result is bit-identical on the same machine and build; afterwards `cargo build --release` embeds it.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/gold-judge}
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
rm -rf "$W"
mkdir -p "$W"
# The training text is the demo's: the whole corpus without its evaluation pool (independent of --seed).
rlhf demo-data --corpus data/corpus/austen.txt.gz --out "$W/data"
rlhf tokenizer train --input "$W/data/pretrain.txt" --vocab-size 4096 --out "$W/tokenizer.json"
rlhf prepare --tokenizer "$W/tokenizer.json" --input "$W/data/pretrain.txt" --out "$W/tokens"
rlhf pretrain --device cpu --data "$W/tokens" --out "$W/gold" --preset gold --steps 1500 --batch 32 --seq 128 \
  --lr 1.5e-3 --warmup 100 --eval-every 100 --save-every 250
cp "$W/gold/step-001500/model.safetensors" "$W/gold/step-001500/config.json" data/judge/gold/
cp "$W/tokenizer.json" data/judge/gold/tokenizer.json
sha256sum data/judge/gold/*
