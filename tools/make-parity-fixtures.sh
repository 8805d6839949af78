#!/usr/bin/env bash
# Regenerates the PyTorch/transformers reference fixtures under tests/fixtures/ (committed; the Rust tests
# read them and need no Python). Creates .venv-parity/ (git-ignored; VENV=DIR chooses another) with torch,
# transformers, safetensors.
#   tools/make-parity-fixtures.sh                      # write the fixtures: tests/fixtures/parity/ (GPT-2),
#                                                      # tests/fixtures/parity_modern/ (Llama, Qwen2, Mistral),
#                                                      # tests/fixtures/gpt2_tokenizer_ids.json
#   tools/make-parity-fixtures.sh chat                 # tests/fixtures/hf_chat (builds and runs target/release/rlhf)
#   tools/make-parity-fixtures.sh chat-formats         # tests/fixtures/hf_chat_formats (Qwen2- and Llama 3-style tokenizers)
#   tools/make-parity-fixtures.sh check-export DIR [--expected tests/fixtures/parity{,_modern}/NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-parity}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    # PyPI's default torch wheel (CUDA build; large, but it runs on the CPU as well).
    "$VENV/bin/pip" install --quiet torch transformers safetensors numpy regex jinja2
fi
export TOKENIZERS_PARALLELISM=false
if [ $# -eq 0 ]; then
    exec "$VENV/bin/python" tools/parity_fixtures.py fixtures
fi
if [ "$1" = chat ]; then
    cargo build --release
fi
exec "$VENV/bin/python" tools/parity_fixtures.py "$@"
