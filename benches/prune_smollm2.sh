#!/usr/bin/env bash
# Benchmark (not a test): wall time of LLM-Pruner's SmolLM2 run (taylor-first, ratio 0.34, layers [4, 28), its
# exact 10 × 64 calibration windows, published GQA aggregation) with prunelab on the CPU, next to the official
# code's 55 s on the same machine class (../shared/reference/smollm2-135m.json). Needs models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['llm_pruner_official']['calibration_ids'], open(sys.argv[2], 'w'))" \
    "$shared/reference/smollm2-135m.json" "$tmp/calib.json"
cargo build --quiet --release
start=$(date +%s.%N)
"${CARGO_TARGET_DIR:-target}/release/prunelab" prune models/smollm2-135m --out "$tmp/out" --importance taylor-first --ratio 0.34 \
    --layers 4..28 --calib-ids "$tmp/calib.json" --compat llm-pruner --json > "$tmp/report.json"
end=$(date +%s.%N)
python3 - "$tmp/report.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
total = float(sys.argv[3]) - float(sys.argv[2])
for t in r["timings"]:
    print(f"{t['stage']:<10} {t['seconds']:7.2f} s")
print(f"{'total':<10} {total:7.2f} s (process wall time, load and write included)")
print(f"official LLM-Pruner (backward + grouping + slicing): 55 s  ->  prunelab is {55 / total:.1f}x faster")
PY
