#!/usr/bin/env bash
# Benchmark (not a test): what the layer-wise calibration passes hold beside the weights, measured against what
# the resident check counts for them (`prune/activations.rs` `pass_bytes (in_memory)`). flap + ls on SmolLM2-135M,
# ratio 0.25 on layers [4, 8), windows of the Python tutorial, in f32 and bf16; the windows in one chunk
# (`--calib-batch` = all of them) at four shapes, and 128 × 512 in chunks of 16. The process's anonymous
# memory (RssAnon) is sampled every 10 ms; the CLI keeps freed blocks in its heap (`cli/allocator.rs`), so
# this is the high-water mark of what it allocated. "Pass" is the peak during the sequential stage less the
# peak before it (the weights, loaded); the count is the windows' activations, one chunk's MLP tensors and the
# Gram matrices. The stages are dated back from the process's end, which follows the write at once. Needs
# models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${PRUNELAB_SHARED:-../shared}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# PRUNELAB_BIN: a prunelab binary already built (else `cargo build --release`).
bin="${PRUNELAB_BIN:-${CARGO_TARGET_DIR:-target}/release/prunelab}"
[ -n "${PRUNELAB_BIN:-}" ] || cargo build --quiet --release
echo "| windows | chunk | precision | pass, measured | counted | measured / counted | sequential |"
echo "|---|---|---|---|---|---|---|"
for shape in 32:256:32 256:128:256 64:512:64 128:512:128 128:512:16; do
    IFS=: read -r n len chunk <<< "$shape"
    for precision in f32 bf16; do
        name="${n}x${len}-$chunk-$precision"
        python3 - "$tmp/$name" models/smollm2-135m/config.json "$n" "$len" "$chunk" "$precision" \
            "$bin" prune models/smollm2-135m --out "$tmp/$name.out" --importance flap --compensation ls \
            --ratio 0.25 --layers 4..8 --calib "$shared/data/calib-python-tutorial.txt" --calib-samples "$n" \
            --calib-len "$len" --calib-batch "$chunk" --precision "$precision" --json <<'PY'
import json, subprocess, sys, threading, time
out, cfg, n, length, chunk, precision = sys.argv[1], json.load(open(sys.argv[2])), *map(int, sys.argv[3:6]), sys.argv[6]
p = subprocess.Popen(sys.argv[7:], stdout=open(f"{out}.json", "w"))
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
stages = {s["stage"]: s["seconds"] for s in json.load(open(f"{out}.json"))["timings"]}
end = series[-1][0] - stages["write"]
begin = end - stages["sequential"]
loaded = max(b for s, b in series if s < begin)
peak = max(b for s, b in series if begin <= s <= end)
size = 4 if precision == "f32" else 2
hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
o_proj = cfg["num_attention_heads"] * cfg.get("head_dim", hidden // cfg["num_attention_heads"])
counted = n * length * hidden * size + chunk * length * 2 * (inter + hidden) * size \
    + (o_proj ** 2 + inter ** 2) * 4
mib = lambda b: f"{b / 2**20:,.0f} MiB"
print(f"| {n} × {length} | {chunk} | {precision} | {mib(peak - loaded)} | {mib(counted)} | "
      f"{(peak - loaded) / counted:.2f} | {stages['sequential']:.1f} s |", flush=True)
PY
    done
done
