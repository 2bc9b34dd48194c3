#!/usr/bin/env bash
# Builds what benches/gpu/run.sh needs on the GPU machine (which has no Rust) into bench-carry/ (git-ignored, to
# be carried by the device tool; ≤ 64 MiB): the CUDA CLI and the golden test binary built with CUDA (gzipped), and
# the fixtures.
# Usage: benches/gpu/prepare.sh   then, on the device: bash benches/gpu/run.sh   (carry: ["bench-carry"])
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
shared="${PRUNELAB_SHARED:-$repo/../shared}"
cargo build --release -p prunelab --features cuda
golden="$(cargo test --release -p prunelab --features cuda --test golden --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "golden" and m.get("executable"): print(m["executable"])' | tail -n 1)"
rm -rf bench-carry && mkdir -p bench-carry/shared
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab
cp "$golden" bench-carry/golden
strip bench-carry/prunelab bench-carry/golden
# Stripped, the two binaries are ≈ 77 MB; gzipped ≈ 30 MB, inside what a device call carries. run.sh unpacks them.
tar -czf bench-carry/bins.tar.gz -C bench-carry prunelab golden
rm bench-carry/prunelab bench-carry/golden
cp -r "$shared/fixtures" bench-carry/shared/fixtures
du -sh bench-carry
