#!/usr/bin/env bash
# Rebuilds one of the two models the repository ships, both trained here on the demo's pretrain.txt (Austen's
# novels without the evaluation pool) under the same 4,096-id tokenizer:
#   bash tools/train-shipped-model.sh gold [WORK_DIR]   the gold judge's language model -> data/judge/gold/
#                                                      (data/judge/SOURCE.md; about 40 min on 2 cores)
#   bash tools/train-shipped-model.sh base [WORK_DIR]   the demo's pretrained policy base -> data/demo/base/
#                                                      (data/demo/SOURCE.md; about 25 min on 2 cores)
# The result is bit-identical on the same machine and build; `cargo build --release` embeds the gold model.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:?usage: tools/train-shipped-model.sh gold|base [WORK_DIR]}
W=${2:-/tmp/shipped-$KIND}
cargo build --release --quiet
rlhf() { ./target/release/rlhf "$@"; }
rm -rf "$W"
mkdir -p "$W"
# The training text is the demo's: the whole corpus without its evaluation pool (independent of --seed).
rlhf demo-data --corpus data/corpus/austen.txt.gz --out "$W/data"
rlhf tokenizer train --input "$W/data/pretrain.txt" --vocab-size 4096 --out "$W/tokenizer.json"
rlhf prepare --tokenizer "$W/tokenizer.json" --input "$W/data/pretrain.txt" --out "$W/tokens"
case "$KIND" in
  gold)
    rlhf pretrain --device cpu --data "$W/tokens" --out "$W/run" --preset gold --steps 1500 --batch 32 --seq 128 \
      --lr 1.5e-3 --warmup 100 --eval-every 100 --save-every 250
    cp "$W/run/step-001500/model.safetensors" "$W/run/step-001500/config.json" data/judge/gold/
    cp "$W/tokenizer.json" data/judge/gold/tokenizer.json
    sha256sum data/judge/gold/*
    ;;
  base)
    rlhf pretrain --device cpu --data "$W/tokens" --out "$W/run" --preset tiny --steps 1500 --batch 32 --seq 128 \
      --lr 2e-3 --warmup 100 --eval-every 100 --save-every 250
    rm -rf data/demo/base
    rlhf export --checkpoint "$W/run" --out data/demo/base
    sha256sum data/demo/base/*
    ;;
  *) echo "unknown model '$KIND': gold or base" >&2; exit 2 ;;
esac
