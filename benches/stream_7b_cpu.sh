#!/usr/bin/env bash
# Benchmark (not a test): the streamed loader at full scale on the CPU. Writes a synthetic LLaMA-7B (bf16
# shards, 13.5 GB), then prunes it disk to disk with `prune --stream` and a weight score without repair (l2,
# uniform 25% of KV groups and MLP channels, layers [4, 30), no calibration text), sampling the process's
# anonymous memory (RssAnon: what it holds itself; mapped shard pages are the page cache's) every 20 ms.
# Prints the time per stage, the peak, and the peak against the weights the pass holds by design: one input
# layer on the device (on the CPU backend, host memory too), one pruned layer waiting to be written, and the
# largest tensor passed through (embeddings or head).
# Needs ~25 GB of free disk under $DIR (default: a temporary folder next to the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
dir="$(mktemp -d "${DIR:-..}/stream7b.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
start=$(date +%s.%N)
"$bin" synth --shape llama-7b --dtype bf16 --out "$dir/in" > /dev/null
end=$(date +%s.%N)
python3 -c "print(f'synth llama-7b (bf16): {$end - $start:.1f} s')"
python3 - "$bin" "$dir" <<'PY'
import json, subprocess, sys, threading, time
bin, dir = sys.argv[1], sys.argv[2]
args = [bin, "prune", f"{dir}/in", "--out", f"{dir}/out", "--stream", "--importance", "l2",
        "--compensation", "none", "--ratio", "0.25", "--layers", "4..30", "--precision", "bf16", "--json"]
start = time.time()
p = subprocess.Popen(args, stdout=subprocess.PIPE)
peak = {"anon": 0, "rss": 0}
def sample():
    while p.poll() is None:
        try:
            for line in open(f"/proc/{p.pid}/status"):
                k, v = line.split(":", 1)
                if k in ("RssAnon", "VmRSS"):
                    key = "anon" if k == "RssAnon" else "rss"
                    peak[key] = max(peak[key], int(v.split()[0]) * 1024)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.02)
t = threading.Thread(target=sample); t.start()
out, _ = p.communicate(); t.join()
wall = time.time() - start
if p.returncode != 0:
    sys.exit(f"prune failed with {p.returncode}")
r = json.loads(out)
cfg = json.load(open(f"{dir}/in/config.json"))
h, v = cfg["hidden_size"], cfg["vocab_size"]
hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
def layer(s):  # bf16 bytes of one decoder layer of shape s
    return 2 * (h * hd * (2 * s["num_heads"] + 2 * s["num_kv_heads"]) + 3 * h * s["intermediate_size"] + 2 * h)
inp, pruned = max(map(layer, r["layers_before"])), max(map(layer, r["layers_after"][4:30]))
embed = 2 * v * h
for s in r["timings"]:
    print(f"{s['stage']:<14} {s['seconds']:7.1f} s")
print(f"{'total':<14} {wall:7.1f} s (process wall time)")
print(f"parameters     {r['params_before']['total']:,} -> {r['params_after']['total']:,}")
gb = lambda b: f"{b / 1e9:.2f} GB"
print(f"peak anonymous memory {gb(peak['anon'])}; peak RSS with mapped shard pages {gb(peak['rss'])}")
held = inp + pruned + embed
print(f"input layer {gb(inp)} + pruned layer {gb(pruned)} + embeddings {gb(embed)} = {gb(held)}"
      f" -> peak / held weights = {peak['anon'] / held:.2f}")
PY
