#!/usr/bin/env bash
# Measurement (not a test): the README's table "Recipes at ≤ 105,747,264 parameters, on two domains", every row
# again. Each recipe prunes SmolLM2-135M to the reference's parameter budget (--target-params 0.21386),
# calibrates on windows of 128 tokens of the calibration text (seed 42) and is evaluated on the eval text
# (Python FAQ, 64 × 128) and on the GPL (59 × 128). Prints the dense model's two perplexities, then the table in
# Markdown, a row as each run ends (about an hour on 2 cores). Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
dense() {
    "$bin" eval models/smollm2-135m --text "$shared/data/eval-python-faq.txt" --max-windows 64 --json > "$tmp/dense.json"
    "$bin" eval models/smollm2-135m --text tests/data/domains/gpl-3.0.txt --json > "$tmp/dense.gpl.json"
    python3 - "$tmp/dense.json" "$tmp/dense.gpl.json" <<'PY'
import json, sys
print(f"Dense: {json.load(open(sys.argv[1]))['ppl']:.3f} / {json.load(open(sys.argv[2]))['ppl']:.3f}")
PY
}
# row NAME "SCORE | COMPENSATION | STRUCTURES | LAYERS | ALLOCATION | CALIBRATION" PARAMS-NOTE FLAGS…
row() {
    local name=$1 label=$2 note=$3
    shift 3
    measure "$name" --target-params 0.21386 "$@"
    python3 - "$tmp/$name.json" "$tmp/$name.gpl.json" "$label" "$note" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
gpl = json.load(open(sys.argv[2]))
note = f" {sys.argv[4]}" if sys.argv[4] else ""
print(f"| {sys.argv[3]} | {r['params_after']['total']:,}{note} | {r['eval']['after']['ppl']:.3f} | {gpl['ppl']:.3f} |",
      flush=True)
PY
}
dense
echo
echo "| score | compensation | structures | layers | allocation | calibration | params | Python FAQ | GPL-3 |"
echo "|---|---|---|---|---|---|---|---|---|"
kv=(--structures kv-groups,mlp --layers 4..28)
mlp=(--structures mlp --layers 0..30)
n128=(--calib-samples 128)
row tf-uniform "taylor-first | none | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance taylor-first --compensation none "${kv[@]}"
row tf-search "taylor-first | none | KV groups + MLP | 4..28 | search | 32 × 128" "" \
    --importance taylor-first --compensation none "${kv[@]}" --allocation search
row ada "adapruner (taylor-first, taylor-vector, l2) | none | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance adapruner --compensation none "${kv[@]}"
row ada-ntk "adapruner (taylor-first, ntk, taylor-vector, l2) | none | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance adapruner --mix taylor-first,ntk,taylor-vector,l2 --compensation none "${kv[@]}"
row ada-ls "adapruner (taylor-first, taylor-vector, l2) | ls | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance adapruner --compensation ls "${kv[@]}"
row ntk "ntk | none | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance ntk --compensation none "${kv[@]}"
row ntk-ls "ntk | ls | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance ntk --compensation ls "${kv[@]}"
row obs "obs | ls | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance obs --compensation ls "${kv[@]}"
row obs-global "obs | ls | KV groups + MLP | 4..28 | global | 32 × 128" "" \
    --importance obs --compensation ls "${kv[@]}" --allocation global
row obs-global-all "obs | ls | KV groups + MLP | 0..30 | global | 32 × 128" "" \
    --importance obs --compensation ls --structures kv-groups,mlp --layers 0..30 --allocation global
row obs-bias "obs | ls-bias | KV groups + MLP | 4..28 | uniform | 32 × 128" "(biases)" \
    --importance obs --compensation ls-bias "${kv[@]}"
row num "numerical | ls | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance numerical --compensation ls "${kv[@]}"
row num-search "numerical | ls | KV groups + MLP | 4..28 | search | 32 × 128" "" \
    --importance numerical --compensation ls "${kv[@]}" --allocation search
row num-r01 "numerical | ls, ridge 0.1 | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance numerical --compensation ls --ridge 0.1 "${kv[@]}"
row num-r1 "numerical | ls, ridge 1.0 | KV groups + MLP | 4..28 | uniform | 32 × 128" "" \
    --importance numerical --compensation ls --ridge 1.0 "${kv[@]}"
row num-128 "numerical | ls | KV groups + MLP | 4..28 | uniform | 128 × 128" "" \
    --importance numerical --compensation ls "${kv[@]}" "${n128[@]}"
row obs-mlp "obs | ls | MLP | 0..30 | uniform | 32 × 128" "" \
    --importance obs --compensation ls "${mlp[@]}"
row num-mlp "numerical | ls | MLP | 0..30 | uniform | 32 × 128" "" \
    --importance numerical --compensation ls "${mlp[@]}"
row num-mlp-global "numerical | ls | MLP | 0..30 | global | 32 × 128" "" \
    --importance numerical --compensation ls "${mlp[@]}" --allocation global
row best "**numerical** | **ls** | **MLP** | **0..30** | **global** | **128 × 128**" "" \
    --importance numerical --compensation ls "${mlp[@]}" --allocation global "${n128[@]}"
row best-r01 "numerical | ls, ridge 0.1 | MLP | 0..30 | global | 128 × 128" "" \
    --importance numerical --compensation ls --ridge 0.1 "${mlp[@]}" --allocation global "${n128[@]}"
