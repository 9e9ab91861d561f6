#!/bin/sh
# 2026-12-08 (second session), call A, on branch gpu-persist (gpu-next + the persistent runs):
# test_persistent, what a kernel boundary costs (chain.cu), tg128 with the persistent runs off /
# on / prefetching, alternated, on the 1.2B Q4_K_M and the 350M, then every other test of
# test_cuda with the batched int8 products on (EXSA_CUDA_MMQ_MIN=2) in the time left. Carry
# carry/fxA, carry/debs.
. tools/gpu-calls/call-lib.sh
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export NVCCFLAGS=-lineinfo
export EXSA_CUDA_MMQ_MIN=2
${NVCC:-/usr/local/cuda/bin/nvcc} -O3 -arch=sm_90 -o /tmp/chain tools/cuda-micro/chain.cu &
TEST_TIMEOUT=150 sh tools/device-run.sh test test_persistent 2>&1 | grep -v '^  gpu '
echo "after build and test_persistent: $(el) s"
wait
room 60 && timeout 40 /tmp/chain
echo "after chain: $(el) s"
EXSA=build/exsa
one() { # preset type extra-args
    f=/tmp/$1-$2.gguf
    [ -f $f ] || $EXSA synth --preset $1 --type $2 -o $f >/dev/null 2>&1
    shift 2
    for v in 0 1 2; do
        room 30 || return
        echo "EXSA_CUDA_PERSIST=$v $*:"
        EXSA_CUDA_PERSIST=$v timeout 30 $EXSA bench -m $f -ngl 99 -p 0 -n 128 -r 3 "$@" \
            2>>"$OUT/persist.err" | grep -E "^\| lfm2"
    done
}
for rep in 1 2; do one lfm2-1.2b Q4_K_M; done
one lfm2-350m Q4_K_M
one lfm2-1.2b Q4_K_M -d 4096
grep -h "exsa: cuda" "$OUT/persist.err" 2>/dev/null | sort | uniq -c | head
if room 60; then
    timeout $((565 - $(el))) build/tests/test_cuda test_matmul test_graph_after_unprepare \
        test_fused_products test_norm test_qk_norm_rope test_elementwise test_embed_gather \
        test_attention test_shortconv test_moe test_fixtures test_greedy_f32 test_partial_offload \
        test_graphs_and_batching test_batch_invariance test_prompt_cache 2>&1 |
        tee "$OUT/test-rest.log" | grep -E "FAIL|ok \]|passed|ngl|graphs" | head -120
fi
echo "total $(el) s"
