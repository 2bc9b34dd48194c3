#!/usr/bin/env bash
# Benchmark (not a test): wall time on the CPU of (1) LLM-Pruner's SmolLM2 run (taylor-first, ratio 0.34, layers
# [4, 28), its exact 10 × 64 calibration windows, published GQA aggregation) and (2) the training-free obs + ls
# run on the same shapes (32 × 128 calibration windows), next to the official LLM-Pruner code's 55 s on the same
# machine class (../shared/reference/smollm2-135m.json). Needs models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['llm_pruner_official']['calibration_ids'], open(sys.argv[2], 'w'))" \
    "$shared/reference/smollm2-135m.json" "$tmp/calib.json"
cargo build --quiet --release
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
run() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$bin" prune models/smollm2-135m --out "$tmp/$name" --ratio 0.34 --layers 4..28 --json "$@" > "$tmp/$name.json"
    end=$(date +%s.%N)
    python3 - "$tmp/$name.json" "$start" "$end" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
total = float(sys.argv[3]) - float(sys.argv[2])
print(f"== {sys.argv[4]}")
for t in r["timings"]:
    print(f"{t['stage']:<12} {t['seconds']:7.2f} s")
print(f"{'total':<12} {total:7.2f} s (process wall time, load and write included)")
print(f"official LLM-Pruner (backward + grouping + slicing): 55 s  ->  prunelab is {55 / total:.1f}x faster")
PY
}
run taylor-first --importance taylor-first --compensation none --calib-ids "$tmp/calib.json" --compat llm-pruner
run obs-ls --importance obs --compensation ls --calib ../shared/data/calib-python-tutorial.txt \
    --calib-samples 32 --calib-len 128
