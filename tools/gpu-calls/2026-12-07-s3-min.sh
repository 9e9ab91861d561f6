#!/bin/sh
# Session 3 of 2026-12-07, the short call (when too little device time is left for call1): the
# tests of test_cuda with the batched int8 products on (EXSA_CUDA_MMQ_MIN=2), then batched
# decode with and without them, then decode (tg128) of this build.
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export EXSA_CUDA_MMQ_MIN=2
t0=$(date +%s)
TEST_TIMEOUT=200 sh tools/device-run.sh test 2>&1 | grep -v '^  gpu '
echo "after tests: $(($(date +%s) - t0)) s"
NP_LIST="1 4 16 32 64" NP_ENV=EXSA_CUDA_MMQ_MIN=0 sh tools/device-run.sh np
echo "after np: $(($(date +%s) - t0)) s"
sh tools/device-run.sh ab
echo "total $(($(date +%s) - t0)) s"
