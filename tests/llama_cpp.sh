#!/usr/bin/env bash
# Opt-in (llama-cpp-python compiles llama.cpp for ~8 minutes): `pip install llama-cpp-python==0.3.36 numpy gguf
# safetensors`, then
#   tests/llama_cpp.sh
# Writes an unpruned and a pruned SmolLM2 GGUF with prunelab and checks them with llama.cpp; then SmolLM2 with
# LLaMA-3 rotary scaling added to its config (its GGUF carries it as rope_freqs.weight), and with linear and YaRN
# scaling (as rope.scaling.* metadata); then with q/k/v biases (a qwen2 config), written as llama and, through
# llama.cpp's `gguf` package, as a `qwen2` GGUF (q/k rows unpermuted), which prunelab reads and prunes; then
# SmolLM2 with 6 whole layers removed and repaired (a shorter `llama` stack); then query heads pruned inside
# their KV groups (per-layer shapes as `deci`, and every layer alike as `llama`); last, llama.cpp quantises an f16
# GGUF to Q2_K, Q3_K_M, Q5_0, Q5_1 and IQ4_NL files that prunelab reads (tests/llama_cpp_quants.py).
# PRUNELAB_BIN: a prunelab binary already built (else `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
bin="${PRUNELAB_BIN:-${CARGO_TARGET_DIR:-target}/release/prunelab}"
models/smollm2/fetch
[ -n "${PRUNELAB_BIN:-}" ] || cargo build --quiet --release
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" convert models/smollm2-135m.gguf --out "$tmp/ours.gguf"
"$bin" prune models/smollm2-135m.gguf --out "$tmp/pruned.gguf" --importance obs --compensation ls --ratio 0.34 \
    --layers 4..28 --calib "$shared/data/calib-python-tutorial.txt" --calib-samples 32 --calib-len 128 --dtype f16
python3 tests/llama_cpp_check.py models/smollm2-135m.gguf "$tmp/ours.gguf" "$tmp/pruned.gguf"
"$bin" convert models/smollm2-135m.gguf --out "$tmp/hf" --format hf
python3 - "$tmp/hf/config.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
# head_dim 64, rope_theta 1e5: four wavelengths (78, 112, 160, 229) interpolated, the longer ones divided by 8.
cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 256}
cfg.pop("rope_parameters", None)
json.dump(cfg, open(sys.argv[1], "w"), indent=1)
PY
"$bin" convert "$tmp/hf" --out "$tmp/scaled.gguf"
"$bin" prune "$tmp/hf" --out "$tmp/scaled-pruned.gguf" --importance l2 --compensation none --ratio 0.34 \
    --layers 4..28
mkdir "$tmp/linear"
cp "$tmp/hf"/* "$tmp/linear/"
python3 - "$tmp/linear/config.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}  # transformers 4.x spelling, as long-context fine-tunes have it
cfg.pop("rope_parameters", None)
json.dump(cfg, open(sys.argv[1], "w"), indent=1)
PY
"$bin" convert "$tmp/linear" --out "$tmp/linear.gguf"
"$bin" prune "$tmp/linear" --out "$tmp/linear-pruned.gguf" --importance l2 --compensation none --ratio 0.34 \
    --layers 4..28
for variant in yarn yarn-attention; do
    mkdir "$tmp/$variant"
    cp "$tmp/hf"/* "$tmp/$variant/"
    python3 - "$tmp/$variant/config.json" "$variant" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
# head_dim 64, rope_theta 1e5: frequency 0 kept, 1-6 blended, the rest divided by 4; cos/sin times 1.139.
cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
if sys.argv[2] == "yarn-attention":
    cfg["rope_scaling"]["attention_factor"] = 1.3  # travels as rope.scaling.attn_factor = 1.3 / 1.139
cfg.pop("rope_parameters", None)
json.dump(cfg, open(sys.argv[1], "w"), indent=1)
PY
    "$bin" convert "$tmp/$variant" --out "$tmp/$variant.gguf"
done
"$bin" prune "$tmp/yarn" --out "$tmp/yarn-pruned.gguf" --importance l2 --compensation none --ratio 0.34 \
    --layers 4..28
mkdir "$tmp/qwen2"
cp "$tmp/hf"/* "$tmp/qwen2/"
python3 tests/llama_cpp_qwen2.py add-biases "$tmp/qwen2"
"$bin" convert "$tmp/qwen2" --out "$tmp/qwen2-as-llama.gguf"
python3 tests/llama_cpp_qwen2.py to-qwen2 "$tmp/qwen2-as-llama.gguf" "$tmp/qwen2.gguf"
"$bin" prune "$tmp/qwen2.gguf" --out "$tmp/qwen2-pruned.gguf" --importance l2 --compensation none --ratio 0.34 \
    --layers 4..28
"$bin" prune models/smollm2-135m.gguf --out "$tmp/depth.gguf" --structures layers --importance block-influence \
    --compensation ls --ratio 0.2 --calib "$shared/data/calib-python-tutorial.txt"
"$bin" prune models/smollm2-135m.gguf --out "$tmp/heads.gguf" --structures query-heads,mlp --ratio 0.34 \
    --layers 4..28 --calib "$shared/data/calib-python-tutorial.txt"
"$bin" prune models/smollm2-135m.gguf --out "$tmp/heads-uniform.gguf" --structures query-heads --ratio 0.34 \
    --layers 0..30 --calib "$shared/data/calib-python-tutorial.txt"
"$bin" convert models/smollm2-135m.gguf --out "$tmp/unscaled.gguf"
python3 tests/llama_cpp_rope_check.py "$bin" "$shared/data/eval-python-faq.txt" "$tmp/unscaled.gguf" \
    "llama3=$tmp/scaled.gguf" "llama3, pruned (deci)=$tmp/scaled-pruned.gguf" \
    "linear=$tmp/linear.gguf" "linear, pruned (deci)=$tmp/linear-pruned.gguf" \
    "yarn=$tmp/yarn.gguf" "yarn, attention factor 1.3=$tmp/yarn-attention.gguf" \
    "yarn, pruned (deci)=$tmp/yarn-pruned.gguf" \
    "q/k/v biases, as llama=$tmp/qwen2-as-llama.gguf" "q/k/v biases, as qwen2=$tmp/qwen2.gguf" \
    "q/k/v biases, qwen2 pruned (deci)=$tmp/qwen2-pruned.gguf" \
    "6 whole layers, pruned (llama, 24 blocks)=$tmp/depth.gguf" \
    "query heads 9 → 6 in layers 4..28, pruned (deci)=$tmp/heads.gguf" \
    "query heads 9 → 6 in every layer, pruned (llama)=$tmp/heads-uniform.gguf"
# llama.cpp quantises an f16 GGUF to the types of its other files (Q2_K, Q3_K_M, Q5_0, Q5_1, IQ4_NL); prunelab
# reads each as llama.cpp does.
"$bin" convert models/smollm2-135m.gguf --out "$tmp/f16.gguf" --dtype f16
python3 tests/llama_cpp_quants.py "$bin" "$shared/data/eval-python-faq.txt" "$tmp/f16.gguf"
