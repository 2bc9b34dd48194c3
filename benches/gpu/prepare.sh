#!/usr/bin/env bash
# Builds what benches/gpu/run.sh needs on the GPU machine (which has no Rust) into bench-carry/ (git-ignored, to
# be carried by the device tool; ≤ 64 MiB): the CUDA CLI and the golden and products test binaries built with CUDA
# (gzipped), and the fixtures.
# Usage: benches/gpu/prepare.sh   then, on the device: bash benches/gpu/run.sh   (carry: ["bench-carry"])
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
shared="${PRUNELAB_SHARED:-$repo/../shared}"
# The same build as scripts/test's (a plain cargo build resolves other features without the tests'
# dev-dependencies and would compile the library again): the CLI lands in release/ beside the test binaries.
cargo test --release -p prunelab --features cuda --no-run
# test_binary NAME: builds tests/NAME.rs with CUDA and prints the executable's path.
test_binary() {
  cargo test --release -p prunelab --features cuda --test "$1" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"): print(m["executable"])' "$1" | tail -n 1
}
golden="$(test_binary golden)"
products="$(test_binary products)"
rm -rf bench-carry && mkdir -p bench-carry/shared
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab
cp "$golden" bench-carry/golden
cp "$products" bench-carry/products
strip bench-carry/prunelab bench-carry/golden bench-carry/products
# Stripped, the three binaries are ≈ 104 MB; gzipped ≈ 27 MB, inside what a device call carries. run.sh unpacks them.
tar -czf bench-carry/bins.tar.gz -C bench-carry prunelab golden products
rm bench-carry/prunelab bench-carry/golden bench-carry/products
cp -r "$shared/fixtures" bench-carry/shared/fixtures
du -sh bench-carry
