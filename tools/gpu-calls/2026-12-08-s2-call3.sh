#!/bin/sh
# 2026-12-08 (second session), call 3, on branch gpu-persist (gpu-next + the persistent decode
# runs, EXSA_CUDA_PERSIST=1, off by default). Run it after 2026-12-08-call1.sh has passed
# test_cuda on gpu-next. In order of need, each step only when the call has time left: the
# persistent runs' test (every weight-type pair of set A against the kernels they replace;
# a block that never arrives traps after 2 s rather than hangs), the products and attention
# tests (their device code moved into functions the runs share), tg128 with and without the
# runs (=1) and with their L2 prefetch of the next product's weights (=2) alternated on the 1.2B
# Q4_K_M (depth 0 and 4096), 350M Q4_K_M, 1.2B Q8_0 and F16; the
# per-op profile does not see inside a run (eager ops only), so ncu's kernel durations close.
# Carry carry/fxA and carry/debs.
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$(date +%s)
el() { echo $(($(date +%s) - t0)); }
room() { [ $(($(date +%s) - t0 + $1)) -lt 570 ]; } # room N: N more seconds fit
TEST_TIMEOUT=150 sh tools/device-run.sh test test_persistent test_matmul test_fused_products \
    test_qk_norm_rope test_attention test_shortconv test_embed_gather 2>&1 | grep -v '^  gpu '
echo "after build and tests: $(el) s"
EXSA=build/exsa
one() { # preset type extra-args: tg128 without the persistent runs, with, with the L2 prefetch
    f=/tmp/$1-$2.gguf
    [ -f $f ] || $EXSA synth --preset $1 --type $2 -o $f >/dev/null 2>&1
    shift 2
    for v in 0 1 2; do
        echo "EXSA_CUDA_PERSIST=$v $*:"
        EXSA_CUDA_PERSIST=$v timeout 40 $EXSA bench -m $f -ngl 99 -p 0 -n 128 -r 3 "$@" \
            2>>"$OUT/persist.err" | grep -E "^\| lfm2"
    done
}
for rep in 1 2; do
    room 60 && one lfm2-1.2b Q4_K_M
done
room 60 && one lfm2-1.2b Q4_K_M -d 4096
room 60 && one lfm2-350m Q4_K_M
room 60 && one lfm2-1.2b Q8_0
room 60 && one lfm2-1.2b F16
echo "after bench: $(el) s"
if room 120; then # kernel durations of 4 decode tokens, graphs off: the runs against their ops
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    for v in 0 2; do
        EXSA_CUDA_PERSIST=$v EXSA_CUDA_GRAPHS=off timeout 100 $NCU --clock-control none \
            --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv \
            $EXSA bench -m /tmp/lfm2-1.2b-Q4_K_M.gguf -ngl 99 -p 0 -n 4 -r 1 \
            >"$OUT/ncu-p$v.csv" 2>"$OUT/ncu-p$v.err"
        echo "ncu EXSA_CUDA_PERSIST=$v rc=$?"
        python3 tools/ncu-summary.py <"$OUT/ncu-p$v.csv" | head -30
    done
fi
grep -h "exsa: cuda" "$OUT/persist.err" 2>/dev/null | sort | uniq -c | head
echo "total $(el) s"
