#!/usr/bin/env bash
# Measurement (not a test): what pruning buys in decoding speed. SmolLM2-135M dense, and pruned three ways to the
# parameter count of removing 20% of the default range 3..29 as whole layers (block influence + ls): those
# layers; KV groups and MLP channels (numerical + ls, global allocation, --target-params of the same fraction);
# query heads and MLP channels (likewise); then 40% of the range as layers against KV groups and MLP channels.
# Each model greedily continues the same prompt for 128 tokens, past any end-of-text (`generate --ignore-eos`, batch 1,
# CPU backend). The models take turns, five rounds, so that a slower minute of the machine slows them all;
# decoding speed is each model's median. Calibration and perplexity as in depth_smollm2.sh. Prints a Markdown
# table. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
prompt="How do I extract a substring from a string in Python?"
field() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); exec("print(" + sys.argv[2] + ")")' "$@"; }

# The models: NAME, then the table's label in $tmp/NAME.label; their reports in $tmp/NAME.json.
names=(dense)
ln -s "$(pwd)/models/smollm2-135m" "$tmp/dense"
echo "dense" > "$tmp/dense.label"
"$bin" eval models/smollm2-135m --text "$shared/data/eval-python-faq.txt" --max-windows 64 --json > "$tmp/dense.faq.json"
"$bin" eval models/smollm2-135m --text tests/data/domains/gpl-3.0.txt --json > "$tmp/dense.gpl.json"
model() {  # model NAME LABEL ARGS…: prunes and evaluates NAME, keeps it for the speed rounds
    local name=$1
    echo "$2" > "$tmp/$name.label"
    shift 2
    keep=1 measure "$name" "$@"
    names+=("$name")
}
for ratio in 0.2 0.4; do
    model "depth$ratio" "layers, ratio $ratio (block influence + ls)" --structures layers --ratio "$ratio" \
        --importance block-influence --compensation ls
    target="$(field "$tmp/depth$ratio.json" 'v["removed_fraction"]')"
    model "width$ratio" "KV groups + MLP, as many parameters (numerical + ls, global)" --importance numerical \
        --compensation ls --allocation global --target-params "$target"
    [ "$ratio" = 0.4 ] || model "heads$ratio" "query heads + MLP, as many parameters (numerical + ls, global)" \
        --structures query-heads,mlp --importance numerical --compensation ls --allocation global \
        --target-params "$target"
done

for round in 1 2 3 4 5; do
    for name in "${names[@]}"; do
        "$bin" generate "$tmp/$name" --prompt "$prompt" --tokens 128 --ignore-eos --json >> "$tmp/$name.speed.jsonl"
    done
done

echo "| model | layers | parameters | Python FAQ | GPL-3 | decode tokens/s | × dense | prompt s |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$tmp" "${names[@]}" <<'PY'
import json, os, statistics, sys
tmp, names = sys.argv[1], sys.argv[2:]
def speed(name):
    runs = [json.loads(l) for l in open(os.path.join(tmp, name + ".speed.jsonl"))]
    return (statistics.median(r["decode_tokens_per_second"] for r in runs),
            statistics.median(r["prefill_seconds"] for r in runs))
dense = speed("dense")[0]
for name in names:
    label = open(os.path.join(tmp, name + ".label")).read().strip()
    gpl = json.load(open(os.path.join(tmp, name + ".gpl.json")))["ppl"]
    if name == "dense":
        layers, params = 30, 134_515_008
        faq = json.load(open(os.path.join(tmp, "dense.faq.json")))["ppl"]
    else:
        r = json.load(open(os.path.join(tmp, name + ".json")))
        layers, params, faq = len(r["layers_after"]), r["params_after"]["total"], r["eval"]["after"]["ppl"]
    tps, prefill = speed(name)
    print(f"| {label} | {layers} | {params:,} | {faq:.3f} | {gpl:.3f} | {tps:.1f} | {tps / dense:.2f} "
          f"| {prefill:.3f} |")
PY
