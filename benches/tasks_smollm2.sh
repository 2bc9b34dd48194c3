#!/usr/bin/env bash
# Measurement (not a test): does multiple-choice accuracy rank the pruned models as perplexity does? SmolLM2-135M
# dense, then pruned by the recipes of the README's tables — layers 4..28 losing 1 of 3 KV groups and 34% of the
# MLP (LLM-Pruner's taylor-first with the published code's crediting, no repair; obs, flap and numerical with
# least squares), and 15.8% of the parameters as six whole layers (block influence + ls) or as width
# (numerical + ls, global) — each scored on the two FAQ tasks (`eval --tasks`, acc and acc_norm as
# lm-evaluation-harness computes them: `web/data/tasks-python-faq.jsonl`, 133 questions of the Python FAQ with
# four first sentences of answers each, and `tasks-python-faq-completions.jsonl`, 300 half sentences with four
# second halves each), with perplexity on the FAQ text (64 × 128) and the GPL (59 × 128). Calibration as in
# depth_smollm2.sh. Prints a Markdown table. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
answers=web/data/tasks-python-faq.jsonl
completions=web/data/tasks-python-faq-completions.jsonl
field() { python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); exec("print(" + sys.argv[2] + ")")' "$@"; }

names=(dense)
echo "dense" > "$tmp/dense.label"
"$bin" eval models/smollm2-135m --text "$shared/data/eval-python-faq.txt" --max-windows 64 --json > "$tmp/dense.faq.json"
"$bin" eval models/smollm2-135m --text tests/data/domains/gpl-3.0.txt --json > "$tmp/dense.gpl.json"
"$bin" eval models/smollm2-135m --tasks "$answers" --json > "$tmp/dense.tasks.json"
"$bin" eval models/smollm2-135m --tasks "$completions" --json > "$tmp/dense.completions.json"
model() {  # model NAME LABEL ARGS…: prunes NAME, evaluates it, scores the task
    local name=$1
    echo "$2" > "$tmp/$name.label"
    shift 2
    keep=1 measure "$name" "$@"
    "$bin" eval "$tmp/$name" --tasks "$answers" --json > "$tmp/$name.tasks.json"
    "$bin" eval "$tmp/$name" --tasks "$completions" --json > "$tmp/$name.completions.json"
    rm -rf "${tmp:?}/$name"
    names+=("$name")
}
width=(--ratio 0.34 --layers 4..28)
model llm-pruner "KV groups + MLP: taylor-first, --compat llm-pruner, no repair" "${width[@]}" \
    --importance taylor-first --compensation none --compat llm-pruner
model obs "KV groups + MLP: obs + ls" "${width[@]}" --importance obs --compensation ls
model flap "KV groups + MLP: flap + ls" "${width[@]}" --importance flap --compensation ls
model numerical "KV groups + MLP: numerical + ls" "${width[@]}" --importance numerical --compensation ls
model depth "6 layers: block influence + ls" --structures layers --ratio 0.2 --importance block-influence \
    --compensation ls
target="$(field "$tmp/depth.json" 'v["removed_fraction"]')"
model width "KV groups + MLP, as many parameters: numerical + ls, global" --importance numerical \
    --compensation ls --allocation global --target-params "$target"

echo "| model | parameters | Python FAQ ppl | GPL-3 ppl | answers acc | acc_norm | completions acc | acc_norm |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$tmp" "${names[@]}" <<'PY'
import json, os, sys
tmp, names = sys.argv[1], sys.argv[2:]
load = lambda name, kind: json.load(open(os.path.join(tmp, f"{name}.{kind}.json")))
for name in names:
    label = open(os.path.join(tmp, name + ".label")).read().strip()
    if name == "dense":
        params, faq = 134515008, load(name, "faq")["ppl"]
    else:
        r = json.load(open(os.path.join(tmp, name + ".json")))
        params, faq = r["params_after"]["total"], r["eval"]["after"]["ppl"]
    acc = lambda t: f"{t['acc']:.3f} ± {t['acc_stderr']:.3f} | {t['acc_norm']:.3f} ± {t['acc_norm_stderr']:.3f}"
    print(f"| {label} | {params:,} | {faq:.3f} | {load(name, 'gpl')['ppl']:.3f} | "
          f"{acc(load(name, 'tasks'))} | {acc(load(name, 'completions'))} |")
PY
