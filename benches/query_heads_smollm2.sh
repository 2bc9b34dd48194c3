#!/usr/bin/env bash
# Measurement (not a test): query heads pruned inside their KV groups against whole KV groups on SmolLM2-135M
# (9 query heads in 3 KV groups) over the default range 3..29: the attention alone at ratio 0.34 (3 of each
# layer's 9 query heads go either way; whole groups take their K/V heads with them), and attention with MLP at a
# target of 20% of all parameters, uniform and global; the training-free numerical score with least squares,
# and l2 unrepaired. Calibration 32 × 128 tokens of the calibration text, perplexity on the eval text (64 × 128)
# and on the GPL (tests/data/domains/gpl-3.0.txt, 59 × 128). Prints a Markdown table. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
echo "| structures | score | repair | allocation | heads / KV heads per layer | parameters | Python FAQ | GPL-3 | seconds |"
echo "|---|---|---|---|---|---|---|---|---|"
run() {
    measure "$@"
    python3 - "$tmp/$1.json" "$tmp/$1.gpl.json" "$(cat "$tmp/$1.seconds")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rec = r["recipe"]
gpl = json.load(open(sys.argv[2]))
shapes = sorted({f"{s['num_heads']}/{s['num_kv_heads']}" for s in r["layers_after"][3:29]})
print(f"| {'+'.join(rec['structures'])} | {rec['importance']} | {rec['compensation']} "
      f"| {rec['allocation']['kind']} | {', '.join(shapes)} | {r['params_after']['total']:,} "
      f"| {r['eval']['after']['ppl']:.3f} | {gpl['ppl']:.3f} "
      f"| {float(sys.argv[3]):.0f} |")
PY
}
for attention in kv-groups query-heads; do
    run "$attention-num" --structures "$attention" --ratio 0.34 --importance numerical --compensation ls
    run "$attention-l2" --structures "$attention" --ratio 0.34 --importance l2 --compensation none
done
for allocation in uniform global; do
    for attention in kv-groups query-heads; do
        run "$attention-$allocation" --structures "$attention,mlp" --target-params 0.2 \
            --allocation "$allocation" --importance numerical --compensation ls
    done
done
