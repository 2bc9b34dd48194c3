#!/usr/bin/env bash
# Benchmark (not a test): peak memory and time of a gradient score's backward on SmolLM2-135M, every calibration
# window in one backward (`--calib-batch 16`) against backwards of a few windows, the gradients summed: the
# default batch (5 windows: 4 GiB of activations as `prune/gradients.rs` counts them) and one window. taylor-first,
# 16 × 256 windows of the Python tutorial, ratio 0.25 on layers [4, 28), no repair. Prints each run's gradient
# stage time and peak resident memory (GNU time), their ratios to the one-backward run, and whether the plans
# agree. Needs models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --release
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
run() {
    local name=$1; shift
    /usr/bin/time -f "%M" -o "$tmp/$name.rss" "$bin" prune models/smollm2-135m --out "$tmp/$name" \
        --importance taylor-first --compensation none --ratio 0.25 --layers 4..28 \
        --calib ../shared/data/calib-python-tutorial.txt --calib-samples 16 --calib-len 256 --json "$@" \
        > "$tmp/$name.json"
}
run all-at-once --calib-batch 16
run default
run batch-1 --calib-batch 1
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def of(name):
    r = json.load(open(f"{tmp}/{name}.json"))
    grad = sum(t["seconds"] for t in r["timings"] if t["stage"] == "gradients")
    rss = int(open(f"{tmp}/{name}.rss").read().split()[-1]) / 1024
    plan = json.load(open(f"{tmp}/{name}/plan.json"))
    return grad, rss, plan
base_grad, base_rss, base_plan = of("all-at-once")
print(f"{'run':<12} {'gradients':>10} {'peak RSS':>10} {'time ratio':>10} {'RSS ratio':>9}  plan")
for name in ["all-at-once", "default", "batch-1"]:
    grad, rss, plan = of(name)
    same = "same" if plan == base_plan else "differs"
    print(f"{name:<12} {grad:>8.1f} s {rss:>6.0f} MiB {grad / base_grad:>10.2f} {rss / base_rss:>9.2f}  {same}")
PY
