#!/usr/bin/env bash
# Benchmark (not a test): the browser lab's run of the end-to-end test (demo model, obs + ls at 20%, 8 × 128
# calibration and 8 evaluation windows: eval before, prune, eval after) in headless Chromium on WebGPU
# (SwiftShader) against the same recipe with the native CLI on wgpu (Vulkan; lavapipe on a machine without a
# GPU) and on the CPU, measured now; and the page's default (Device auto), which on a software adapter such as
# SwiftShader computes on the CPU backend. Run `scripts/test` (or tests/web/lab.mjs) first: it leaves the page's
# timings in tests/web/screenshots/timings.json.
set -euo pipefail
cd "$(dirname "$0")/.."
timings=tests/web/screenshots/timings.json
[ -f "$timings" ] || { echo "no $timings: run tests/web/lab.mjs first" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['recipe'], open(sys.argv[2], 'w'))" "$timings" "$tmp/recipe.json"
cargo build --quiet --release
bin="${CARGO_TARGET_DIR:-target}/release/prunelab"
for backend in wgpu cpu; do
    start=$(date +%s.%N)
    "$bin" prune models/demo --out "$tmp/$backend" --recipe "$tmp/recipe.json" --calib web/data/calib-python-tutorial.txt \
        --eval web/data/eval-python-faq.txt --eval-windows 8 --backend "$backend" --json > "$tmp/$backend.json"
    end=$(date +%s.%N)
    python3 -c "print($end - $start)" > "$tmp/$backend.seconds"
done
python3 - "$timings" "$tmp" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
native = {b: float(open(f"{sys.argv[2]}/{b}.seconds").read()) for b in ("wgpu", "cpu")}
print(f"browser, WebGPU (SwiftShader): {t['webgpu_seconds']:8.1f} s")
print(f"browser, CPU fallback (wasm):  {t['cpu_seconds']:8.1f} s")
print(f"native wgpu (Vulkan):          {native['wgpu']:8.1f} s  -> browser WebGPU / native wgpu = {t['webgpu_seconds'] / native['wgpu']:.1f}x (goal <= 2x)")
print(f"native CPU (flex):             {native['cpu']:8.1f} s  -> browser CPU / native CPU = {t['cpu_seconds'] / native['cpu']:.1f}x")
print(f"browser, Device auto on SwiftShader (runs on the CPU backend): {t['auto_seconds']:.1f} s -> "
      f"browser (auto) / native wgpu = {t['auto_seconds'] / native['wgpu']:.2f}x")
PY
