#!/usr/bin/env bash
# Builds what benches/gpu/run.sh needs on the GPU machine (which has no Rust) into bench-carry/ (git-ignored, to
# be carried by the device tool; ≤ 64 MiB): the CUDA CLI, the golden and products test binaries and the matmul
# bench, all built with CUDA and burn's autotune (gzipped), and the fixtures.
# Usage: benches/gpu/prepare.sh   then, on the device: bash benches/gpu/run.sh   (carry: ["bench-carry"])
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
shared="${PRUNELAB_SHARED:-$repo/../shared}"
features=cuda,autotune
# The same build as scripts/test's, with autotune (a plain cargo build resolves other features without the tests'
# dev-dependencies and would compile the library again): the CLI lands in release/ beside the test binaries.
cargo test --release -p prunelab --features "$features" --no-run
# binary test|bench NAME: builds tests/NAME.rs or benches/NAME.rs and prints the executable's path.
binary() {
  local profile=()
  [ "$1" = test ] && profile=(--release)  # cargo bench builds in release and takes no --release
  cargo "$1" "${profile[@]}" -p prunelab --features "$features" --"$1" "$2" --no-run --message-format=json \
    2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"): print(m["executable"])' "$2" | tail -n 1
}
golden="$(binary test golden)"
products="$(binary test products)"
matmul="$(binary bench matmul)"
rm -rf bench-carry && mkdir -p bench-carry/shared
cp "$CARGO_TARGET_DIR/release/prunelab" bench-carry/prunelab
cp "$golden" bench-carry/golden
cp "$products" bench-carry/products
cp "$matmul" bench-carry/matmul
bins=(prunelab golden products matmul)
(cd bench-carry && strip "${bins[@]}")
# Stripped, the binaries are ≈ 174 MB (autotune's kernels make each larger); xz takes them to ≈ 28 MB (gzip: 44),
# which with the fixtures and the working tree stays inside the 64 MiB a device call carries. run.sh unpacks them.
tar -cJf bench-carry/bins.tar.xz -C bench-carry "${bins[@]}"
(cd bench-carry && rm "${bins[@]}")
cp -r "$shared/fixtures" bench-carry/shared/fixtures
# The build the table names (run.sh copies it to $OUT).
printf 'prunelab %s, --features %s\n' "$(git describe --always --dirty)" "$features" > bench-carry/build.txt
# What a device call sends: the tracked and untracked-not-ignored files, and bench-carry/.
sent=$(( $(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}') +
  $(du -sb bench-carry | cut -f1) ))
echo "a device call sends $((sent / 1048576)) MiB (limit 64)"
[ "$sent" -le $((64 * 1048576)) ] || { echo "over the device tool's 64 MiB: carry less" >&2; exit 1; }
