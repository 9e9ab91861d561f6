#!/bin/sh
# Session 3 of 2026-12-07, call 1: every test of test_cuda (fixture set A; the batched int8
# products of mmq.cu take 2-64 tokens, EXSA_CUDA_MMQ_MIN=2), batched decode with and without
# them, decode with the staged activations laid out without shared-memory bank conflicts (this
# tree) against the layout before (carry/old/mmv.h = src/cuda/mmv.h of 2a59b9f, built first),
# what DETERMINISTIC costs now, the GPU loadtest (exsa serve -ngl 99), then the 3-block-grid
# matrix-vector fault under compute-sanitizer.
export EXSA_FIXTURES=$PWD/carry/fxA
export EXSA_GPU_FIXTURES=lfm2-tiny-F32,lfm2-tiny-F16,lfm2-tiny-Q4_K_M,lfm2-tiny-Q4_0,lfm2-tiny-Q8_0,lfm2-tiny-Q5_K_M,lfm2-tiny-Q6_K,lfm2moe-tiny-Q4_K_M
export NVCCFLAGS=-lineinfo
export EXSA_CUDA_MMQ_MIN=2 # off by default until this call
OUT=${OUT:-/tmp/out}
t0=$(date +%s)
R=/tmp/sysroot
L=$R/usr/lib/x86_64-linux-gnu
mkdir -p $R
for f in carry/debs/*.deb; do dpkg -x "$f" $R; done
cp src/cuda/mmv.h /tmp/mmv-new.h && cp carry/old/mmv.h src/cuda/mmv.h
make -j16 CUDA=1 DEB_HEADERS= CFLAGS="-I$R/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" build/exsa \
    >"$OUT/build-old.log" 2>&1 || tail -20 "$OUT/build-old.log"
cp build/exsa /tmp/exsa-old && cp /tmp/mmv-new.h src/cuda/mmv.h
echo "old build: $(($(date +%s) - t0)) s"
TEST_TIMEOUT=240 sh tools/device-run.sh test 2>&1 | grep -v '^  gpu '
echo "after tests: $(($(date +%s) - t0)) s"
NP_ENV=EXSA_CUDA_MMQ_MIN=0 sh tools/device-run.sh np
echo "after np: $(($(date +%s) - t0)) s"
AB_BINS="/tmp/exsa-old build/exsa" sh tools/device-run.sh ab
echo "after ab: $(($(date +%s) - t0)) s"
LOAD_SECONDS=6 sh tools/device-run.sh load
echo "after load: $(($(date +%s) - t0)) s"
DET_ROUNDS=1 sh tools/device-run.sh det
echo "after det: $(($(date +%s) - t0)) s"
EXSA_CUDA_MMQ_MIN=0 EXSA_CUDA_MMV_MAX_BLOCKS=3 timeout 60 compute-sanitizer --tool memcheck \
    --print-limit 3 build/tests/test_cuda test_matmul >"$OUT/mc.log" 2>&1
echo "memcheck rc=$?"
grep -E "Invalid|at 0x|by thread|Address|is out of bounds|FAIL|ERROR SUMMARY|passed" "$OUT/mc.log" | head -30
echo "total $(($(date +%s) - t0)) s"
