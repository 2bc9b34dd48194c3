#!/usr/bin/env bash
# Opt-in (llama-cpp-python compiles llama.cpp for ~8 minutes): `pip install llama-cpp-python==0.3.36`, then
#   tests/llama_cpp.sh
# Writes an unpruned and a pruned SmolLM2 GGUF with prunelab and checks them with llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
models/smollm2/fetch
cargo build --quiet --release
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" convert models/smollm2-135m.gguf --out "$tmp/ours.gguf"
"$bin" prune models/smollm2-135m.gguf --out "$tmp/pruned.gguf" --importance obs --compensation ls --ratio 0.34 \
    --layers 4..28 --calib "$shared/data/calib-python-tutorial.txt" --calib-samples 32 --calib-len 128 --dtype f16
python3 tests/llama_cpp_check.py models/smollm2-135m.gguf "$tmp/ours.gguf" "$tmp/pruned.gguf"
