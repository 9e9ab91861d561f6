#!/bin/sh
# Session 3 of 2026-12-07, call 1: every test of test_cuda (fixture set A; the batched int8
# products of mmq.cu now take 2-64 tokens), batched decode with and without them, what
# DETERMINISTIC costs now, then the 3-block-grid matrix-vector fault under compute-sanitizer
# (on the matrix-vector kernels: EXSA_CUDA_MMQ_MIN=0).
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export NVCCFLAGS=-lineinfo
export EXSA_CUDA_MMQ_MIN=2 # off by default until this call
OUT=${OUT:-/tmp/out}
t0=$(date +%s)
sh tools/device-run.sh test 2>&1 | grep -v '^  gpu '
echo "after tests: $(($(date +%s) - t0)) s"
NP_ENV=EXSA_CUDA_MMQ_MIN=0 sh tools/device-run.sh np
echo "after np: $(($(date +%s) - t0)) s"
DET_ROUNDS=1 sh tools/device-run.sh det
echo "after det: $(($(date +%s) - t0)) s"
EXSA_CUDA_MMQ_MIN=0 EXSA_CUDA_MMV_MAX_BLOCKS=3 timeout 90 compute-sanitizer --tool memcheck \
    --print-limit 3 build/tests/test_cuda test_matmul >"$OUT/mc.log" 2>&1
echo "memcheck rc=$?"
grep -E "Invalid|at 0x|by thread|Address|is out of bounds|FAIL|ERROR SUMMARY|passed" "$OUT/mc.log" | head -30
echo "total $(($(date +%s) - t0)) s"
