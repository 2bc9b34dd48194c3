#!/usr/bin/env bash
# Benchmark (not a test): peak memory and time of a gradient score's backward on SmolLM2-135M (taylor-first,
# windows of the Python tutorial, ratio 0.25 on layers [4, 28), no repair), peak resident memory by GNU time.
# 1. 16 × 256 windows in one backward (`--calib-batch 16`), in the default batches (5 windows: 4 GiB as
#    `prune/gradients.rs` counts them) and one window a backward: gradient stage time, peak, their ratios to
#    one backward, and whether the plans agree.
# 2. The fit of `backward_bytes_per_window`: one backward at 32 × 64, 16 × 256, 4 × 512 and 1 × 512, in f32 and
#    in bf16 (`--precision`); each peak less the windows' count (n · bytes a window in that precision) leaves what
#    the run holds without windows, which the count fits when that remainder is the same at every shape.
# Needs models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --release
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
# run NAME SAMPLES LEN [FLAGS…]
run() {
    local name=$1 samples=$2 len=$3; shift 3
    /usr/bin/time -f "%M" -o "$tmp/$name.rss" "$bin" prune models/smollm2-135m --out "$tmp/$name" \
        --importance taylor-first --compensation none --ratio 0.25 --layers 4..28 \
        --calib ../shared/data/calib-python-tutorial.txt --calib-samples "$samples" --calib-len "$len" --json "$@" \
        > "$tmp/$name.json"
}
run all-at-once 16 256 --calib-batch 16
run default 16 256
run batch-1 16 256 --calib-batch 1
run fit-32x64 32 64 --calib-batch 32
run fit-4x512 4 512 --calib-batch 4
run fit-1x512 1 512 --calib-batch 1
for shape in 32:64 16:256 4:512 1:512; do
    IFS=: read -r n length <<< "$shape"
    run "bf16-${n}x$length" "$n" "$length" --calib-batch "$n" --precision bf16
done
python3 - "$tmp" models/smollm2-135m/config.json <<'PY'
import json, sys
tmp, cfg = sys.argv[1], json.load(open(sys.argv[2]))
def of(name):
    r = json.load(open(f"{tmp}/{name}.json"))
    grad = sum(t["seconds"] for t in r["timings"] if t["stage"] == "gradients")
    rss = int(open(f"{tmp}/{name}.rss").read().split()[-1]) * 1024
    plan = json.load(open(f"{tmp}/{name}/plan.json"))
    return grad, rss, plan
mib = lambda b: b / 2**20
base_grad, base_rss, base_plan = of("all-at-once")
print(f"{'run':<12} {'gradients':>10} {'peak RSS':>12} {'time ratio':>10} {'RSS ratio':>9}  plan")
for name in ["all-at-once", "default", "batch-1"]:
    grad, rss, plan = of(name)
    same = "same" if plan == base_plan else "differs"
    print(f"{name:<12} {grad:>8.1f} s {mib(rss):>8.0f} MiB {grad / base_grad:>10.2f} {rss / base_rss:>9.2f}  {same}")
def window(length, size):  # backward_bytes_per_window, `size` bytes a value (4: f32, 2: bf16)
    wide, scores = (size + 4) // 2, 8 + size
    layer = wide * (10 * cfg["hidden_size"] + 5 * cfg["intermediate_size"])
    layer += scores * cfg["num_attention_heads"] * length
    return length * (cfg["num_hidden_layers"] * layer + 12 * cfg["vocab_size"])
print(f"\n{'one backward':<20} {'peak RSS':>12} {'windows counted':>16} {'remainder':>12}")
for precision, size, names in [("f32", 4, ["fit-32x64", "all-at-once", "fit-4x512", "fit-1x512"]),
                               ("bf16", 2, ["bf16-32x64", "bf16-16x256", "bf16-4x512", "bf16-1x512"])]:
    for name, (n, length) in zip(names, [(32, 64), (16, 256), (4, 512), (1, 512)]):
        _, rss, _ = of(name)
        counted = n * window(length, size)
        shape = f"{n} × {length} {precision}"
        print(f"{shape:<20} {mib(rss):>8.0f} MiB {mib(counted):>12.0f} MiB {mib(rss - counted):>8.0f} MiB")
PY
