#!/bin/sh
# Device call 2 (2026-12-07 session 2): the engine tests of test_cuda (fixture set A), the
# 3-block-grid product fault under compute-sanitizer, and the loadtest on the GPU.
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export NVCCFLAGS=-lineinfo
OUT=${OUT:-/tmp/out}
t0=$(date +%s)
sh tools/device-run.sh test test_fixtures test_greedy test_partial test_graphs test_batch_invariance test_prompt_cache 2>&1 | grep -v '^  gpu '
echo "after tests: $(($(date +%s) - t0)) s"
EXSA_CUDA_MMV_MAX_BLOCKS=3 timeout 100 compute-sanitizer --tool memcheck --print-limit 3 \
    build/tests/test_cuda test_matmul >"$OUT/mc.log" 2>&1
echo "memcheck rc=$?"
grep -E "Invalid|at 0x|by thread|Address|is out of bounds|FAIL|ERROR SUMMARY|passed" "$OUT/mc.log" | head -30
echo "after memcheck: $(($(date +%s) - t0)) s"
[ -n "${LOAD:-}" ] && sh tools/device-run.sh load 2>&1
echo "total $(($(date +%s) - t0)) s"
