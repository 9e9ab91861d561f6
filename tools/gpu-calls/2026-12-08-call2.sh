#!/bin/sh
# 2026-12-08, call 2 (same tree as call 1; EXSA_CUDA_MMQ_MIN from the caller, MMQ=2 or 0):
# exsa bench -ngl 99 on every model of issue 8's table, decode at depth 4096, 8 of 16 layers on
# the GPU, exsa serve -ngl 99 with curl, the GPU loadtest (N clients and a 10-turn chat), and
# what DETERMINISTIC costs. Carries carry/fxB (the fixtures call 1 did not: set B) and carry/debs. Each step bounded so the call ends inside 600 s.
export EXSA_CUDA_MMQ_MIN=${MMQ:-2}
echo "EXSA_CUDA_MMQ_MIN=$EXSA_CUDA_MMQ_MIN"
t0=$(date +%s)
export EXSA_FIXTURES=$PWD/carry/fxB
export EXSA_GPU_FIXTURES=lfm2-tiny-BF16,lfm2-tiny-IQ4_NL,lfm2-tiny-IQ4_XS,lfm2-tiny-Q2_K,lfm2-tiny-Q3_K_M,lfm2-tiny-Q4_1,lfm2-tiny-Q5_0,lfm2-tiny-Q5_1,lfm2moe-tiny-F16,lfm2moe-tiny-Q8_0
TEST_TIMEOUT=150 sh tools/device-run.sh test test_fixtures 2>&1 | grep -v '^  gpu '
echo "after set B: $(($(date +%s) - t0)) s"
BENCH_MODELS="lfm2-350m:Q4_K_M lfm2-1.2b:Q4_K_M lfm2-1.2b:Q4_0 lfm2-1.2b:Q8_0 lfm2-1.2b:F16 lfm2-2.6b:Q4_K_M lfm2-8b-a1b:Q4_K_M" \
    sh tools/device-run.sh bench extra
echo "after bench: $(($(date +%s) - t0)) s"
LOAD_LIST="1 4 16 32 64" LOAD_SECONDS=6 sh tools/device-run.sh load serve
echo "after load: $(($(date +%s) - t0)) s"
DET_ROUNDS=1 sh tools/device-run.sh det
echo "total $(($(date +%s) - t0)) s"
