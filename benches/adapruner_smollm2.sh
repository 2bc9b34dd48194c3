#!/usr/bin/env bash
# Measurement (not a test): the `adapruner` score (AdaPruner: TPE over the calibration blocks the scores come
# from and a mix of scores) against its trial 0, taylor-first, on SmolLM2-135M at the reference's parameter
# budget (--target-params 0.21386, KV groups + MLP channels of layers 4..28, uniform; no repair, and least squares
# on adapruner's winner in the last row). Calibration
# 32 × 128 tokens of the calibration text (adapruner holds the first 4 windows out to measure its trials and
# splits the other 28 into 4 blocks), perplexity on the eval text (64 × 128) and on the GPL (59 × 128). Prints a
# Markdown table with the search's seconds, the winning trial, its mix and blocks. Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
echo "| score | repair | mix | trials | parameters | Python FAQ | GPL-3 | trial 0 → best loss | winner | adapruner s | total s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
run() {
    measure "$@"
    python3 - "$tmp/$1.json" "$tmp/$1.gpl.json" "$(cat "$tmp/$1.seconds")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
gpl = json.load(open(sys.argv[2]))
a = r.get("adapruner")
secs = sum(t["seconds"] for t in r["timings"] if t["stage"] == "adapruner")
if a:
    mix = " + ".join(f"{w:.2f} {m}" for m, w in zip(a["metrics"], a["weights"]))
    found = (f"{', '.join(a['metrics'])} | {len(a['losses'])} | ", f"{a['losses'][0]:.4f} → {a['losses'][a['best']]:.4f}",
             f"trial {a['best']}: {mix}, blocks {a['blocks']}")
else:
    found = ("— | — | ", "—", "—")
print(f"| {r['recipe']['importance']} | {r['recipe']['compensation']} | {found[0]}{r['params_after']['total']:,} | {r['eval']['after']['ppl']:.3f} "
      f"| {gpl['ppl']:.3f} | {found[1]} | {found[2]} | {secs:.1f} | {float(sys.argv[3]):.1f} |")
PY
}
common=(--structures kv-groups,mlp --layers 4..28 --target-params 0.21386)
run taylor-first --importance taylor-first --compensation none "${common[@]}"
run adapruner --importance adapruner --compensation none "${common[@]}"
run adapruner-ntk --importance adapruner --mix taylor-first,ntk,taylor-vector,l2 --compensation none "${common[@]}"
run adapruner-ls --importance adapruner --compensation ls "${common[@]}"
