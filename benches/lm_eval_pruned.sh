#!/usr/bin/env bash
# Check (not a test: it needs lm-evaluation-harness with torch, `pip install "lm-eval[hf]"`, which CI does not
# install): does an independent reader score a pruned output as prunelab does? SmolLM2-135M loses 20% of its
# parameters over all 30 layers (query heads + MLP, numerical + ls, uniform: every layer keeps the same shapes,
# so the output is a plain LlamaConfig that transformers loads), then the FAQ task is scored on that folder by
# `prunelab eval --tasks` and by lm-evaluation-harness (tests/lm_eval_faq.py: its multiple_choice task, `hf`
# model, f32 on the CPU). Prints both accuracies and the largest difference between their log-likelihoods.
# PYTHON: a python with lm-eval (default python3). Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
python="${PYTHON:-python3}"
tasks=web/data/tasks-python-faq.jsonl
keep=1 measure pruned --structures query-heads,mlp --layers 0..30 --target-params 0.2 --importance numerical \
    --compensation ls
"$bin" eval "$tmp/pruned" --tasks "$tasks" --json > "$tmp/ours.json"
"$python" tests/lm_eval_faq.py "$tmp/pruned" "$tmp/theirs.json" > /dev/null 2> "$tmp/lm_eval.log" ||
    { cat "$tmp/lm_eval.log" >&2; exit 1; }
python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
load = lambda name: json.load(open(os.path.join(tmp, name)))
report, ours, theirs = load("pruned.json"), load("ours.json"), load("theirs.json")
pairs = [(a, b) for x, y in zip(ours["log_likelihoods"], theirs["log_likelihoods"]) for a, b in zip(x, y)]
print(f"pruned: {report['params_after']['total']:,} parameters, FAQ ppl {report['eval']['after']['ppl']:.3f}")
print("| scored by | acc | acc_norm |")
print("|---|---|---|")
for name, v in [("prunelab eval --tasks", ours), (f"lm-evaluation-harness {theirs['lm_eval']}", theirs)]:
    print(f"| {name} | {v['acc']:.4f} ± {v['acc_stderr']:.4f} | {v['acc_norm']:.4f} ± {v['acc_norm_stderr']:.4f} |")
print(f"log-likelihoods of {len(pairs)} choices: largest difference {max(abs(a - b) for a, b in pairs):.2e}, "
      f"relative {max(abs(a - b) / abs(b) for a, b in pairs):.2e}")
PY
