#!/usr/bin/env bash
# Benchmark (not a test): what the layer-wise calibration passes hold beside the weights, measured against what
# the resident check counts for them (`prune/activations.rs` `pass_bytes (in_memory)`), on SmolLM2-135M with
# windows of the Python tutorial, in f32 and bf16. Two passes:
# * width: flap + ls, ratio 0.25 on layers [4, 8); the windows in one chunk (`--calib-batch` = all of them) at
#   four shapes, and 128 × 512 in chunks of 16. Counted: the windows' activations, one chunk's MLP tensors and
#   the Gram matrices of o_proj's and down_proj's inputs.
# * depth: a saved plan removing layers 13, 14, 16, 17, 25 and 26 (block influence at 0.2 on 16 × 128 windows),
#   repaired with ls into layers 12, 15 and 24; the windows in one chunk at two shapes. Counted: two streams of
#   the windows' activations (after the absorbing layer's attention, through the run), one chunk's MLP tensors
#   and the Gram of down_proj's input beside the run's contribution.
# The process's anonymous memory (RssAnon) is sampled every 10 ms; the CLI keeps freed blocks in its heap
# (`cli/allocator.rs`), so this is the high-water mark of what it allocated. "Pass" is the peak during the pass's
# stage (sequential, remove layers) less the peak before it (the weights, loaded; a saved plan has no score
# stage). The stages are dated back from the process's end, which follows the write at once. Needs
# models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
calib="$shared/data/calib-python-tutorial.txt"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# PRUNELAB_BIN: a prunelab binary already built (else `cargo build --release`).
bin="${PRUNELAB_BIN:-${CARGO_TARGET_DIR:-target}/release/prunelab}"
[ -n "${PRUNELAB_BIN:-}" ] || cargo build --quiet --release
model=models/smollm2-135m

# measure STEP N LEN CHUNK PRECISION ARGS...: one run of `prune` with ARGS, its pass measured and counted.
measure() {
    local step="$1" n="$2" len="$3" chunk="$4" precision="$5"
    shift 5
    local name="$step-${n}x${len}-$chunk-$precision"
    python3 - "$tmp/$name" "$model/config.json" "$step" "$n" "$len" "$chunk" "$precision" \
        "$bin" prune "$model" --out "$tmp/$name.out" "$@" --compensation ls --calib "$calib" \
        --calib-samples "$n" --calib-len "$len" --calib-batch "$chunk" --precision "$precision" --json <<'PY'
import json, subprocess, sys, threading, time
out, cfg, step = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
n, length, chunk, precision = *map(int, sys.argv[4:7]), sys.argv[7]
p = subprocess.Popen(sys.argv[8:], stdout=open(f"{out}.json", "w"))
start, series = time.time(), []
def sample():
    while p.poll() is None:
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("RssAnon"):
                    series.append((time.time() - start, int(line.split()[1]) * 1024))
        except FileNotFoundError:
            break
        time.sleep(0.01)
t = threading.Thread(target=sample)
t.start()
assert p.wait() == 0
t.join()
stage = {"width": "sequential", "depth": "remove layers"}[step]
stages = {s["stage"]: s["seconds"] for s in json.load(open(f"{out}.json"))["timings"]}
end = series[-1][0] - stages["write"]
begin = end - stages[stage]
loaded = max(b for s, b in series if s < begin)
peak = max(b for s, b in series if begin <= s <= end)
size = 4 if precision == "f32" else 2
hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
o_proj = cfg["num_attention_heads"] * cfg.get("head_dim", hidden // cfg["num_attention_heads"])
grams = {"width": o_proj ** 2 + inter ** 2, "depth": (inter + hidden) ** 2}[step]
# A depth repair holds two streams for every window: after the absorbing layer's attention, through the run.
streams = {"width": 1, "depth": 2}[step]
counted = streams * n * length * hidden * size + chunk * length * 2 * (inter + hidden) * size + grams * 4
mib = lambda b: f"{b / 2**20:,.0f} MiB"
print(f"| {step} | {n} × {length} | {chunk} | {precision} | {mib(peak - loaded)} | {mib(counted)} | "
      f"{(peak - loaded) / counted:.2f} | {stages[stage]:.1f} s |", flush=True)
PY
}

echo "| step | windows | chunk | precision | pass, measured | counted | measured / counted | stage |"
echo "|---|---|---|---|---|---|---|---|"
for shape in 32:256:32 256:128:256 64:512:64 128:512:128 128:512:16; do
    IFS=: read -r n len chunk <<< "$shape"
    for precision in f32 bf16; do
        measure width "$n" "$len" "$chunk" "$precision" --importance flap --ratio 0.25 --layers 4..8
    done
done
"$bin" prune "$model" --out "$tmp/depth-plan.json" --plan-only --structures layers \
    --importance block-influence --ratio 0.2 --compensation none --calib "$calib" --calib-samples 16 \
    --calib-len 128 > /dev/null
python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['removed_layers'] == [13, 14, 16, 17, 25, 26]" \
    "$tmp/depth-plan.json"
for shape in 64:512:64 128:512:128; do
    IFS=: read -r n len chunk <<< "$shape"
    for precision in f32 bf16; do
        measure depth "$n" "$len" "$chunk" "$precision" --plan "$tmp/depth-plan.json"
    done
done
