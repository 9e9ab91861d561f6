#!/bin/sh
# Session 3 of 2026-12-07, the shortest call (device time nearly spent): the product tests of
# test_cuda with the batched int8 products on (EXSA_CUDA_MMQ_MIN=2), exsa bench -np N with them,
# decode (tg128) of this build, then the fused-product tests.
export EXSA_CUDA_MMQ_MIN=2
t0=$(date +%s)
TEST_TIMEOUT=60 sh tools/device-run.sh test test_matmul test_graph_after 2>&1 | grep -v '^  gpu '
echo "after tests: $(($(date +%s) - t0)) s"
NP_LIST="32 64 1 4" sh tools/device-run.sh np
echo "after np: $(($(date +%s) - t0)) s"
TEST_TIMEOUT=60 sh tools/device-run.sh test test_fused 2>&1 | grep -v '^  gpu '
echo "total $(($(date +%s) - t0)) s"
