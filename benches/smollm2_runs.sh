# Sourced by the SmolLM2 measurement scripts (depth_smollm2.sh, depth_width_smollm2.sh, query_heads_smollm2.sh,
# decode_smollm2.sh): builds the CLI, and
# `measure NAME ARGS…` prunes SmolLM2-135M with ARGS, 32 × 128 calibration tokens of the calibration text and the
# eval text (64 × 128) as --eval, then evaluates the result on the GPL (tests/data/domains/gpl-3.0.txt,
# 59 × 128). It leaves the report in $tmp/NAME.json, the GPL evaluation in $tmp/NAME.gpl.json and the prune's
# wall seconds in $tmp/NAME.seconds; the pruned model itself only when called as `keep=1 measure …` (in
# $tmp/NAME). Needs models/smollm2/fetch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared="${PRUNELAB_SHARED:-../shared}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# PRUNELAB_BIN: a prunelab binary already built (else `cargo build --release`).
bin="${PRUNELAB_BIN:-${CARGO_TARGET_DIR:-target}/release/prunelab}"
[ -n "${PRUNELAB_BIN:-}" ] || cargo build --quiet --release
measure() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$bin" prune models/smollm2-135m --out "$tmp/$name" --calib "$shared/data/calib-python-tutorial.txt" \
        --eval "$shared/data/eval-python-faq.txt" --json "$@" > "$tmp/$name.json"
    end=$(date +%s.%N)
    python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$start" "$end" > "$tmp/$name.seconds"
    "$bin" eval "$tmp/$name" --text tests/data/domains/gpl-3.0.txt --json > "$tmp/$name.gpl.json"
    [ "${keep:-0}" = 1 ] || rm -rf "${tmp:?}/$name"
}
