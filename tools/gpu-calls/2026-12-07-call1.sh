#!/bin/sh
# Device call (2026-12-07 session 2): GPU tests on fixture set A, DETERMINISTIC's cost, the -np
# sweep with 16 and 8 tokens a launch, decode with the L2 prefetch and the 3-block long kernels.
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export DET_ROUNDS=1 NP_ENV=EXSA_CUDA_MMV_MAX_TOK=8
export ENV_LIST="- EXSA_CUDA_L2_PREFETCH=1 EXSA_CUDA_MMV_LONG3=1"
t0=$(date +%s)
sh tools/device-run.sh ${STEPS:-test} 2>&1
echo "after tests: $(($(date +%s) - t0)) s"
sh tools/device-run.sh ${STEPS2:-det np envab} 2>&1
echo "total $(($(date +%s) - t0)) s"
