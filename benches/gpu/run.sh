#!/usr/bin/env bash
# The 7B benchmark, in one call on the lent GPU machine (after benches/gpu/prepare.sh here; carry bench-carry/):
#   1. the golden fixture tests and the f32 products' precision on the CUDA backend;
#   2. a synthetic LLaMA-7B (random weights, real shapes, bf16 safetensors shards);
#   3. prunelab end to end in bf16, safetensors on disk → pruned safetensors on disk: taylor-first (uniform 25% of KV
#      groups and MLP channels, layers [4, 30), 10 × 128 calibration ids) and flap + ls (streamed, 128 × 128);
#   4. the same pipelines in PyTorch (benches/gpu/pytorch_baseline.py) on the same files and ids;
#   5. prunelab's two runs again, warm: cubecl compiles every kernel on first use (CI's build has no autotune;
#      step 8's does), which PyTorch (precompiled kernels, cuBLAS heuristics) never pays; prunelab runs in $WORK,
#      whose cubecl.toml keeps its caches in $WORK/cubecl (empty before step 3), as a user's second run finds them;
#   6. a table: stage times, total, peak GPU memory (nvidia-smi, sampled every 50 ms), ratios ours / PyTorch;
#   7. when the call has time left (the table is written first): matmul throughput at the 7B shapes, autotuned
#      against the one kernel burn launches without autotune, f32 and bf16 (benches/matmul.rs, → matmul.txt);
#   8. then flap + ls with the CLI built with autotune (prunelab-autotune), cold (each matmul shape's first call
#      tunes) and warm, with caches of its own, added to the table; then the same with the CLI built with
#      autotune and burn's kernel fusion (prunelab-fused: burn's own default features);
#   9. then decoding speed at batch 1, the dense model and the flap + ls output each continuing a 128-token prompt
#      for 64 tokens (`generate --ignore-eos`, KV cache).
# Steps 7–9 run only while the call has time (CALL_LIMIT, seconds) and each is cut at what is left of it, in that
# order: the fused rows come before decoding, which at 7B they may leave no time for.
# Results (JSON, logs, table.md) go to $OUT; models to $WORK, removed as soon as they are measured.
# Locally, on the CPU (after prepare.sh, or with BIN, AUTOTUNE_BIN and FUSED_BIN naming a CLI):
#   SHAPE=tiny LAYERS=1..3 BACKEND=cpu TORCH_DEVICE=cpu TORCH_DTYPE=f32 SKIP_GOLDEN=1 bash benches/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/prunelab-gpu-out}"
WORK="${WORK:-/tmp/prunelab-gpu-work}"
SHAPE="${SHAPE:-llama-7b}"
LAYERS="${LAYERS:-4..30}"
BACKEND="${BACKEND:-cuda}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
TORCH_DTYPE="${TORCH_DTYPE:-bf16}"
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"  # seconds per measured step: one slow step must not cost the call its later rows
CALL_LIMIT="${CALL_LIMIT:-570}"  # the device call's 600 s, less the unpacking and a margin
left() { echo $(( CALL_LIMIT - SECONDS )); }
PRECISION="${PRECISION:-bf16}"  # prunelab's --precision (bf16: as PyTorch's bf16; statistics and solves in f32/f64)
BINS="$(realpath -m "${BINS:-/tmp/prunelab-gpu-bins}")"  # where bench-carry/bins.tar.xz is unpacked (not carried)
BIN="${BIN:-$BINS/prunelab}"
AUTOTUNE_BIN="${AUTOTUNE_BIN:-$BINS/prunelab-autotune}"  # the CLI built with autotune (step 8)
FUSED_BIN="${FUSED_BIN:-$BINS/prunelab-fused}"  # the CLI built with autotune and fusion (step 8)
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$WORK"
WORK="$(realpath "$WORK")"
# Unpacked with Python's tarfile (lzma is in its standard library; the machine may lack xz).
if [ -f bench-carry/bins.tar.xz ]; then  # on every call: a warm machine may hold older ones
    rm -rf "$BINS" && mkdir -p "$BINS"
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' bench-carry/bins.tar.xz "$BINS"
fi
BIN="$(realpath "$BIN")"
AUTOTUNE_BIN="$(realpath -m "$AUTOTUNE_BIN")"
FUSED_BIN="$(realpath -m "$FUSED_BIN")"
: > "$OUT/runs.jsonl"
now() { date +%s.%N; }
smi() { command -v nvidia-smi > /dev/null && [ "$BACKEND" = cuda ]; }

# measure NAME CMD…: runs CMD (stdout → NAME.json, stderr → NAME.err) and records wall time and peak GPU memory.
measure() {
    local name=$1 base=0 sampler="" start end rc
    shift
    if smi; then
        base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n 1)
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$OUT/$name.mem" &
        sampler=$!
    fi
    start=$(now)
    # prunelab treats SIGTERM as a cancel request (it stops at its next checkpoint and removes its partial
    # output); -k kills what is still running 15 s later.
    timeout -k 15 "$STEP_TIMEOUT" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
    rc=$?
    end=$(now)
    [ -n "$sampler" ] && kill "$sampler" 2> /dev/null && wait "$sampler" 2> /dev/null
    "$PY" - "$name" "$rc" "$start" "$end" "$base" "$OUT" <<'PY' >> "$OUT/runs.jsonl"
import json, os, sys
name, rc, start, end, base, out = sys.argv[1:]
mem = os.path.join(out, name + ".mem")
peak = max((int(l) for l in open(mem) if l.strip().isdigit()), default=None) if os.path.exists(mem) else None
print(json.dumps({"name": name, "rc": int(rc), "wall": float(end) - float(start),
                  "peak_mib": None if peak is None else peak - int(base)}))
PY
    echo "== $name: rc $rc, $(tail -n 1 "$OUT/runs.jsonl")"
    [ "$rc" = 0 ] || tail -n 20 "$OUT/$name.err"
}

if [ "${SKIP_GOLDEN:-0}" != 1 ]; then
    echo "== golden fixture tests on CUDA"
    timeout 180 env PRUNELAB_SHARED=bench-carry/shared "$BINS/golden" cuda --ignored --test-threads=1 2>&1 | tee "$OUT/golden.txt" | tail -n 8
    echo "== f32 products on CUDA (split products against TF32)"
    timeout 60 "$BINS/products" cuda --ignored --nocapture 2>&1 | tee "$OUT/products.txt" | tail -n 6
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c 'import torch; print("torch", torch.__version__)' | tee "$OUT/torch.txt"

measure synth "$BIN" synth --shape "$SHAPE" --out "$WORK/model" --dtype bf16
"$PY" - "$WORK/model/config.json" "$WORK" <<'PY'
import json, random, sys
vocab = json.load(open(sys.argv[1]))["vocab_size"]
rng = random.Random(0)
for n in (10, 128):
    json.dump([[rng.randrange(vocab) for _ in range(128)] for _ in range(n)], open(f"{sys.argv[2]}/ids{n}.json", "w"))
PY

# cubecl reads cubecl.toml from the working directory up: prunelab runs in $WORK (env -C), with its caches there.
rm -rf "$WORK/cubecl"  # the first runs below are cold: they compile kernels
# cubecl_toml DIR: a cubecl.toml in DIR keeping cubecl's autotune and compilation caches in DIR/cubecl.
cubecl_toml() {
    printf '[autotune]\ncache = { file = "%s" }\n\n[compilation]\ncache = { file = "%s" }\n' \
        "$1/cubecl" "$1/cubecl" > "$1/cubecl.toml"
}
cubecl_toml "$WORK"
common=(--structures kv-groups,mlp --ratio 0.25 --layers "$LAYERS" --backend "$BACKEND" --precision "$PRECISION"
    --dtype bf16 --json)
measure ours-taylor-first env -C "$WORK" "$BIN" prune "$WORK/model" --out "$WORK/out" --importance taylor-first --compensation none \
    --calib-ids "$WORK/ids10.json" "${common[@]}"
rm -rf "$WORK/out" "$WORK"/.out.partial-*
measure pytorch-taylor-first "$PY" benches/gpu/pytorch_baseline.py "$WORK/model" "$WORK/ids10.json" "$WORK/out" \
    --recipe taylor-first --layers "$LAYERS" --device "$TORCH_DEVICE" --dtype "$TORCH_DTYPE"
rm -rf "$WORK/out" "$WORK"/.out.partial-*
measure ours-flap-ls env -C "$WORK" "$BIN" prune "$WORK/model" --out "$WORK/out" --importance flap --compensation ls --stream \
    --calib-ids "$WORK/ids128.json" "${common[@]}"
rm -rf "$WORK/out" "$WORK"/.out.partial-*
measure pytorch-flap-ls "$PY" benches/gpu/pytorch_baseline.py "$WORK/model" "$WORK/ids128.json" "$WORK/out" \
    --recipe flap-ls --layers "$LAYERS" --device "$TORCH_DEVICE" --dtype "$TORCH_DTYPE"
rm -rf "$WORK/out" "$WORK"/.out.partial-*
if [ "${SKIP_WARM:-0}" != 1 ]; then
    measure ours-taylor-first-warm env -C "$WORK" "$BIN" prune "$WORK/model" --out "$WORK/out" --importance taylor-first \
        --compensation none --calib-ids "$WORK/ids10.json" "${common[@]}"
    rm -rf "$WORK/out" "$WORK"/.out.partial-*
    measure ours-flap-ls-warm env -C "$WORK" "$BIN" prune "$WORK/model" --out "$WORK/pruned" --importance flap \
        --compensation ls --stream --calib-ids "$WORK/ids128.json" "${common[@]}"
    rm -rf "$WORK"/.pruned.partial-*
fi
cp "$WORK/model/config.json" "$OUT/model-config.json"
[ -f bench-carry/build.txt ] && cp bench-carry/build.txt "$OUT/build.txt"

PRECISION="$PRECISION" "$PY" benches/gpu/table.py "$OUT" | tee "$OUT/table.md"

if [ "$BACKEND" = cuda ] && [ -x "$BINS/matmul" ] && [ "$(left)" -gt 60 ]; then
    echo "== matmul throughput (autotuned vs burn's default kernel)"
    # In a folder of its own with empty caches, so its first calls are cold on a warm machine too.
    rm -rf "$WORK/matmul" && mkdir -p "$WORK/matmul"
    cubecl_toml "$WORK/matmul"
    timeout -k 5 "$(( $(left) < 90 ? $(left) - 10 : 90 ))" env -C "$WORK/matmul" "$BINS/matmul" cuda --shape 7b 2>&1 |
        tee "$OUT/matmul.txt"
fi

# flap + ls built with autotune, then with autotune and fusion, each in a folder whose cubecl.toml keeps its caches
# apart (cold, then warm).
for variant in "autotune:$AUTOTUNE_BIN" "fused:$FUSED_BIN"; do
    name="${variant%%:*}" bin="${variant#*:}"
    [ -x "$bin" ] && [ "$(left)" -gt 60 ] || continue
    rm -rf "$WORK/$name" && mkdir -p "$WORK/$name"  # cold: no cache from an earlier call on a warm machine
    cubecl_toml "$WORK/$name"
    for run in "ours-flap-ls-$name" "ours-flap-ls-$name-warm"; do
        [ "$(left)" -gt 30 ] || break
        STEP_TIMEOUT=$(( $(left) < STEP_TIMEOUT ? $(left) : STEP_TIMEOUT )) measure "$run" env -C "$WORK/$name" \
            "$bin" prune "$WORK/model" --out "$WORK/$name/out" --importance flap \
            --compensation ls --stream --calib-ids "$WORK/ids128.json" "${common[@]}"
        rm -rf "$WORK/$name/out" "$WORK/$name"/.out.partial-*
    done
    PRECISION="$PRECISION" "$PY" benches/gpu/table.py "$OUT" > "$OUT/table.md"
done

if [ "${SKIP_DECODE:-0}" != 1 ] && [ -d "$WORK/pruned" ] && [ "$(left)" -gt 90 ]; then
    "$PY" -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))[0], open(sys.argv[2], "w"))' \
        "$WORK/ids10.json" "$WORK/prompt.json"
    for model in model pruned; do
        [ "$(left)" -gt 30 ] || break
        STEP_TIMEOUT=$(( $(left) < STEP_TIMEOUT ? $(left) : STEP_TIMEOUT )) measure "decode-$model" env -C "$WORK" "$BIN" generate "$WORK/$model" --prompt-ids "$WORK/prompt.json" \
            --tokens 64 --ignore-eos --backend "$BACKEND" --precision "$PRECISION" --json
    done
    "$PY" - "$OUT" <<'PY' | tee -a "$OUT/table.md"
import json, os, sys
def speed(name):
    try:
        return json.load(open(os.path.join(sys.argv[1], name + ".json")))["decode_tokens_per_second"]
    except (OSError, ValueError, KeyError):
        return None
dense, pruned = speed("decode-model"), speed("decode-pruned")
fmt = lambda v: "failed" if v is None else "%.1f tokens/s" % v
ratio = " (%.2fx)" % (pruned / dense) if dense and pruned else ""
print("\nDecoding at batch 1 (128-token prompt, 64 tokens): dense %s, flap + ls %s%s" % (fmt(dense), fmt(pruned), ratio))
PY
fi
rm -rf "$WORK"
