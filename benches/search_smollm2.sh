#!/usr/bin/env bash
# Measurement (not a test): the evolutionary `search` allocation against uniform on SmolLM2-135M at the
# reference's parameter budget (--target-params 0.21386, KV groups + MLP channels of layers 4..28), for a repaired
# recipe (numerical + ls) and an unrepaired one (taylor-first); search with its defaults (12 candidates, 6
# generations, fitness on 4 calibration windows). Calibration 32 × 128 tokens of the calibration text,
# perplexity on the eval text (64 × 128) and on the GPL (59 × 128). Prints a Markdown table with the search
# stage's seconds. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
echo "| score | repair | allocation | parameters | Python FAQ | GPL-3 | search s | total s |"
echo "|---|---|---|---|---|---|---|---|"
run() {
    measure "$@"
    python3 - "$tmp/$1.json" "$tmp/$1.gpl.json" "$(cat "$tmp/$1.seconds")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rec = r["recipe"]
gpl = json.load(open(sys.argv[2]))
search = sum(t["seconds"] for t in r["timings"] if t["stage"] == "search")
print(f"| {rec['importance']} | {rec['compensation']} | {rec['allocation']['kind']} "
      f"| {r['params_after']['total']:,} | {r['eval']['after']['ppl']:.3f} | {gpl['ppl']:.3f} "
      f"| {search:.1f} | {float(sys.argv[3]):.1f} |")
PY
}
for recipe in "numerical ls" "taylor-first none"; do
    set -- $recipe
    for allocation in uniform search; do
        run "$1-$allocation" --importance "$1" --compensation "$2" --structures kv-groups,mlp --layers 4..28 \
            --target-params 0.21386 --allocation "$allocation"
    done
done
