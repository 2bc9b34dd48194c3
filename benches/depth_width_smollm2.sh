#!/usr/bin/env bash
# Measurement (not a test): whole layers and width in one run (--depth-ratio) on SmolLM2-135M, at the parameter
# count of benches/depth_smollm2.sh (15.79% of the parameters, --target-params 0.1579, which counts both steps):
# 1, 2 or 3 of the 26 layers of the default range 3..29 go by block influence (repaired with ls), then KV groups
# and MLP channels of the layers that stay by numerical + ls, next to the same target reached by layers alone
# and by width alone. Calibration 32 × 128 tokens of the calibration text, perplexity on the eval text (64 × 128)
# and on the GPL (tests/data/domains/gpl-3.0.txt, 59 × 128). Prints a Markdown table. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
echo "| layers removed | width | parameters | Python FAQ | GPL-3 | seconds |"
echo "|---|---|---|---|---|---|"
run() {
    measure "$@"
    python3 - "$tmp/$1.json" "$tmp/$1.gpl.json" "$(cat "$tmp/$1.seconds")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rec = r["recipe"]
removed = ", ".join(map(str, r["plan"].get("removed_layers", []))) or "none"
narrowed = [s for s in rec["structures"] if s != "layers"]
width = f"{'+'.join(narrowed)}, {rec['allocation']['kind']}" if rec["structures"] != ["layers"] else "none"
gpl = json.load(open(sys.argv[2]))
print(f"| {removed} | {width} | {r['params_after']['total']:,} | {r['eval']['after']['ppl']:.3f} "
      f"| {gpl['ppl']:.3f} | {float(sys.argv[3]):.0f} |")
PY
}
width=(--importance numerical --compensation ls --target-params 0.1579)
run layers-only --structures layers --importance block-influence --compensation ls --target-params 0.1579
for alloc in uniform global; do
    run "width-$alloc" --allocation "$alloc" "${width[@]}"
done
for depth in 0.03 0.07 0.1; do
    run "depth-$depth-uniform" --depth-ratio "$depth" "${width[@]}"
done
run depth-0.1-global --depth-ratio 0.1 --allocation global "${width[@]}"
