#!/usr/bin/env bash
# Builds what benches/gpu/run.sh needs on the GPU machine (which has no Rust) into bench-carry/ (git-ignored, to
# be carried by the device tool; ≤ 64 MiB with the working tree): CI's CUDA build of the CLI and of the golden and
# products test binaries, the CLI again with burn's autotune (prunelab-autotune) and with autotune and fusion
# (prunelab-fused), and the matmul bench (autotuned against burn's default kernel), all packed with xz, and the
# fixtures.
# Usage: benches/gpu/prepare.sh   then, on the device: bash benches/gpu/run.sh   (carry: ["bench-carry"])
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
shared="${PRUNELAB_SHARED:-$repo/../shared}"
# binary test|bench NAME FEATURES: builds tests/NAME.rs or benches/NAME.rs and prints the executable's path.
binary() {
  local profile=()
  [ "$1" = test ] && profile=(--release)  # cargo bench builds in release and takes no --release
  cargo "$1" "${profile[@]}" -p prunelab --features "$3" --"$1" "$2" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"): print(m["executable"])' "$2" | tail -n 1
}
rm -rf bench-carry && mkdir -p bench-carry/shared
# With autotune: the matmul bench, and the CLI its build links into release/ (copied before the next build
# replaces it).
cargo bench -p prunelab --features cuda,autotune --bench matmul --no-run
cp "$(binary bench matmul cuda,autotune)" bench-carry/matmul
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab-autotune
# With autotune and fusion (burn's own default features).
cargo build --release -p prunelab --features cuda,autotune,fusion
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab-fused
# scripts/test's build (a plain cargo build resolves other features without the tests' dev-dependencies and would
# compile the library again): the CLI lands in release/ beside the test binaries.
cargo test --release -p prunelab --features cuda --no-run
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab
cp "$(binary test golden cuda)" bench-carry/golden
cp "$(binary test products cuda)" bench-carry/products
bins=(prunelab prunelab-autotune prunelab-fused golden products matmul)
(cd bench-carry && strip "${bins[@]}")
# Stripped, the six binaries are ≈ 276 MB; xz -9 (a 64 MiB window, so each binary draws on the code the others
# share; the three CLIs side by side) takes them to ≈ 28 MB, inside what a device call carries. run.sh unpacks them.
tar -cf - -C bench-carry "${bins[@]}" | xz -9 -T1 > bench-carry/bins.tar.xz
(cd bench-carry && rm "${bins[@]}")
cp -r "$shared/fixtures" bench-carry/shared/fixtures
# The build the table names (run.sh copies it to $OUT).
printf 'prunelab %s: --features cuda (prunelab-autotune, matmul: cuda,autotune; prunelab-fused: cuda,autotune,fusion)\n' \
  "$(git describe --always --dirty)" \
  > bench-carry/build.txt
# What a device call sends: the tracked and untracked-not-ignored files, and bench-carry/.
sent=$(( $(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}') +
  $(du -sb bench-carry | cut -f1) ))
echo "a device call sends $((sent / 1048576)) MiB (limit 64)"
[ "$sent" -le $((64 * 1048576)) ] || { echo "over the device tool's 64 MiB: carry less" >&2; exit 1; }
