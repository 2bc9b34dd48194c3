#!/usr/bin/env bash
# Measurement (not a test): depth pruning on SmolLM2-135M — 6 of the 26 layers of the default range 3..29 go
# (ratio 0.2, 21,240,576 parameters, 15.79%) by each whole-layer score, with and without repair, next to width
# pruning of the same parameter count. Calibration 32 × 128 tokens of the calibration text, perplexity on the
# eval text (64 × 128) and on the GPL (tests/data/domains/gpl-3.0.txt, 59 × 128). Prints a Markdown table.
# Needs models/smollm2/fetch.
source "$(dirname "$0")/smollm2_runs.sh"
echo "| score | repair | layers removed | parameters | Python FAQ | GPL-3 | seconds |"
echo "|---|---|---|---|---|---|---|"
run() {
    measure "$@"
    python3 - "$tmp/$1.json" "$tmp/$1.gpl.json" "$(cat "$tmp/$1.seconds")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rec = r["recipe"]
removed = r["plan"].get("removed_layers")
what = ", ".join(map(str, removed)) if removed else "width: " + "+".join(rec["structures"])
gpl = json.load(open(sys.argv[2]))
print(f"| {rec['importance']} | {rec['compensation']} | {what} | {r['params_after']['total']:,} "
      f"| {r['eval']['after']['ppl']:.3f} | {gpl['ppl']:.3f} "
      f"| {float(sys.argv[3]):.0f} |")
PY
}
for score in block-influence perplexity taylor-first l2 random; do
    for repair in none ls; do
        run "$score-$repair" --structures layers --ratio 0.2 --importance "$score" --compensation "$repair"
    done
done
for repair in bias ls-bias; do
    run "bi-$repair" --structures layers --ratio 0.2 --importance block-influence --compensation "$repair"
done
run width --importance numerical --compensation ls --target-params 0.1579
"$bin" eval models/smollm2-135m --text "$shared/data/eval-python-faq.txt" --max-windows 64 --json > "$tmp/dense.json"
"$bin" eval models/smollm2-135m --text tests/data/domains/gpl-3.0.txt --json > "$tmp/dense.gpl.json"
python3 - "$tmp/dense.json" "$tmp/dense.gpl.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"| dense | | | 134,515,008 | {a['ppl']:.3f} | {b['ppl']:.3f} | |")
PY
