#!/usr/bin/env bash
# Checks that the PyTorch baseline computes the same pipelines as prunelab: on a synthetic `tiny` checkpoint (CPU,
# f32), both tools prune layers 1..3 by 25% with taylor-first and with flap + ls, and the written tensors are
# compared (taylor-first: identical; flap + ls: within 1e-4 relative). Needs python3 with torch and safetensors.
# Usage: benches/gpu/check_baseline.sh [PRUNELAB_BIN]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$repo/target}/release/prunelab}"
py="${PYTHON:-python3}"
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
"$bin" synth --shape tiny --out "$w/model" --dtype f32 > /dev/null
"$py" - "$w" <<'PY'
import json, random, sys
w = sys.argv[1]
vocab = json.load(open(f"{w}/model/config.json"))["vocab_size"]
rng = random.Random(0)
for n in (10, 128):
    json.dump([[rng.randrange(vocab) for _ in range(128)] for _ in range(n)], open(f"{w}/ids{n}.json", "w"))
PY
args=(--structures kv-groups,mlp --ratio 0.25 --layers 1..3 --json)
"$bin" prune "$w/model" --out "$w/ours-taylor" --importance taylor-first --compensation none --calib-ids "$w/ids10.json" "${args[@]}" > /dev/null
"$bin" prune "$w/model" --out "$w/ours-flap" --importance flap --compensation ls --stream --calib-ids "$w/ids128.json" "${args[@]}" > /dev/null
for r in taylor-first:taylor:10 flap-ls:flap:128; do
    IFS=: read -r recipe name n <<< "$r"
    "$py" "$repo/benches/gpu/pytorch_baseline.py" "$w/model" "$w/ids$n.json" "$w/torch-$name" --recipe "$recipe" \
        --layers 1..3 --device cpu --dtype f32 > /dev/null
done
"$py" - "$w" <<'PY'
import glob, sys
from safetensors.torch import load_file
w = sys.argv[1]
def load(d):
    out = {}
    for f in glob.glob(f"{w}/{d}/*.safetensors"):
        out.update(load_file(f))
    return out
ok = True
for name, tol in [("taylor", 0.0), ("flap", 1e-4)]:
    a, b = load("ours-" + name), load("torch-" + name)
    assert set(a) == set(b), f"{name}: tensor names differ"
    worst = 0.0
    for k in a:
        assert a[k].shape == b[k].shape, f"{name}: {k} {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
        worst = max(worst, ((a[k].float() - b[k].float()).abs().max() / b[k].float().abs().max().clamp(min=1e-12)).item())
    print(f"{name}: {len(a)} tensors, same shapes, largest relative difference {worst:.2e} (tolerance {tol:g})")
    ok &= worst <= tol
sys.exit(0 if ok else 1)
PY
