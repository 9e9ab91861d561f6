#!/bin/sh
# make bench: writes synthetic LFM2-350M and LFM2-1.2B Q4_K_M files (real shapes and type mix,
# random weights) to a temporary folder, runs `exsa bench` on each with 2 threads (pp512, tg128,
# beside the measured DRAM bandwidth ceiling), and removes the folder.
# Usage: sh bench/run.sh build/exsa [extra exsa bench options, e.g. -r 3 --json]
set -u
exsa=${1:?usage: sh bench/run.sh path/to/exsa [bench options]}
shift
tmp=$(mktemp -d "${TMPDIR:-/tmp}/exsa-bench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0
for preset in lfm2-350m lfm2-1.2b; do
    model="$tmp/$preset-Q4_K_M.gguf"
    "$exsa" synth --preset "$preset" --type Q4_K_M -o "$model" || { status=1; continue; }
    echo "== $preset Q4_K_M"
    "$exsa" bench -m "$model" -t 2 "$@" || status=1
    rm -f "$model"
    echo
done
exit $status
