#!/bin/sh
# device-run.sh: one call on a GPU machine of the device tool (its copy of this tree): unpacks the
# carried Debian libraries (carry/debs, from `apt-get download libmicrohttpd-dev libmicrohttpd12
# libcjson-dev libcjson1 libpcre2-dev libpcre2-8-0 ...`) into a sysroot, builds exsa and the GPU
# tests with CUDA, then runs the steps named on the command line, each logged to $OUT/STEP.log:
#   test [NAMES]   build/tests/test_cuda (fixtures from $EXSA_FIXTURES, e.g. carry/fxA)
#   testgpu        make test-gpu
#   memcheck       compute-sanitizer memcheck over the ops and one fixture
#   bench          exsa synth files of the real shapes, exsa bench -ngl 99 on each ($BENCH_MODELS)
#   serve          exsa serve -ngl 99 answering chat completions, stream and not, with curl
#   det            what DETERMINISTIC costs: pp512, tg128 and tg128 at depth 4096 with and without
#   envab          decode (tg128) under each setting of $ENV_LIST (e.g. "X=0 X=1"), two rounds
#   np             exsa bench -np N: N sequences decoding together, aggregate tokens/s ($NP_LIST)
#   ab             decode (tg128) by each exsa binary of $AB_BINS (e.g. an older build), alternating
#   load           exsa serve -ngl 99 under bench/loadtest: N streaming clients ($LOAD_LIST), then a
#                  10-turn chat's time to first token by turn
# Usage there: sh tools/device-run.sh test bench ...
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
R=/tmp/sysroot
L=$R/usr/lib/x86_64-linux-gnu
mkdir -p $R
for f in carry/debs/*.deb; do dpkg -x "$f" $R; done
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
if ! make -j16 CUDA=1 DEB_HEADERS= CFLAGS="-I$R/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" \
    build/exsa build/tests/test_cuda build/bench/loadtest >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    exit 1
fi
echo "build: $(($(date +%s) - t0)) s"
EXSA=build/exsa

# make test-gpu itself (the same binary as step test, through the Makefile target).
step_testgpu() {
    timeout 400 make CUDA=1 DEB_HEADERS= CFLAGS="-I$R/usr/include" LDFLAGS="-L$L -Wl,-rpath,$L" \
        test-gpu 2>&1 | tee "$OUT/test-gpu.log" | grep -E "FAIL|ok \]|passed|graphs" | tail -40
}

step_test() {
    timeout ${TEST_TIMEOUT:-400} build/tests/test_cuda "$@" 2>&1 | tee "$OUT/test.log" | grep -E "FAIL|ok \]|passed|gpu |ngl|graphs" | head -150
}

step_memcheck() {
    EXSA_GPU_FIXTURES=${MEMCHECK_FIXTURE:-lfm2-tiny-Q4_K_M} timeout 300 compute-sanitizer --tool memcheck \
        --error-exitcode 9 build/tests/test_cuda test_norm test_attention test_fixtures \
        >"$OUT/memcheck.log" 2>&1
    echo "memcheck rc=$? (0: clean)"
    grep -E "ERROR SUMMARY|Invalid|passed" "$OUT/memcheck.log" | head -20
}

bench_one() { # preset type [extra bench args]
    f=/tmp/$1-$2.gguf
    [ -f "$f" ] || $EXSA synth --preset "$1" --type "$2" -o "$f" >/dev/null 2>&1 || { echo "synth $1 $2 failed"; return; }
    shift 2
    timeout 120 $EXSA bench -m "$f" -r 3 "$@" 2>>"$OUT/bench.err" | grep -E "^\| lfm2|ceiling" | tee -a "$OUT/bench.log"
}

step_bench() {
    for m in ${BENCH_MODELS:-"lfm2-1.2b:Q4_K_M"}; do
        bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 512 -n 128
    done
}

# Decode at a 4096-token depth, and 8 of 16 layers on the GPU (the rest on the CPU).
step_extra() {
    bench_one lfm2-1.2b Q4_K_M -ngl 99 -p 0 -n 128 -d 4096
    bench_one lfm2-1.2b Q4_K_M -ngl 99 -p 0 -n 128
    bench_one lfm2-1.2b Q4_K_M -ngl 8 -p 512 -n 128 -t 16
}

# The decode and prefill profile (per-op GPU time, eager), and decode without PDL / graphs.
step_perf() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    EXSA_CUDA_PROFILE=1 $EXSA bench -m "$f" -ngl 99 -p 0 -n 64 -r 1 2>&1 | grep -A40 "cuda profile" | tee "$OUT/prof-tg.txt"
    EXSA_CUDA_PROFILE=1 $EXSA bench -m "$f" -ngl 99 -p 512 -n 0 -r 1 2>&1 | grep -A40 "cuda profile" | tee "$OUT/prof-pp.txt"
    for v in EXSA_CUDA_NO_PDL EXSA_CUDA_GRAPHS; do
        echo "$v=off:"
        env $v=off $EXSA bench -m "$f" -ngl 99 -p 0 -n 128 -r 3 2>/dev/null | grep -E "^\| lfm2"
    done
}

# True kernel durations (no launch gaps) of a few decode steps, per kernel, with ncu.
step_ncu() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    EXSA_CUDA_GRAPHS=off timeout 300 $NCU --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv \
        $EXSA bench -m "$f" -ngl 99 -p 0 -n 4 -r 1 >"$OUT/ncu.csv" 2>"$OUT/ncu.err"
    echo "ncu rc=$?"
    python3 tools/ncu-summary.py <"$OUT/ncu.csv" | tee "$OUT/ncu-summary.txt"
}

# Decode with the products' grids capped at N resident blocks per SM (EXSA_CUDA_MMV_BPS).
step_bps() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    for b in ${BPS_LIST:-0 4 8 16}; do
        echo "EXSA_CUDA_MMV_BPS=$b:"
        EXSA_CUDA_MMV_BPS=$b $EXSA bench -m "$f" -ngl 99 -p 0 -n 128 -r 3 2>/dev/null | grep -E "^\| lfm2"
    done
}

# Per-op GPU time of decode at a 4096-token depth against depth 0 (what grows with the context).
step_depth() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    for d in 0 4096; do
        echo "depth $d:"
        EXSA_CUDA_PROFILE=1 $EXSA bench -m "$f" -ngl 99 -p 0 -n 128 -d $d -r 1 2>&1 | grep -A30 "cuda profile" | tee "$OUT/prof-d$d.txt"
    done
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    EXSA_CUDA_GRAPHS=off timeout 200 $NCU --clock-control none -k regex:k_attn \
        --launch-skip ${ATTN_SKIP:-120} --launch-count 12 --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__block_size \
        $EXSA bench -m "$f" -ngl 99 -p 0 -n 8 -d 4096 -r 1 2>&1 | grep -E "k_attn|duration|bytes_read|grid_size|block_size" | head -80
}

# ncu's full sections for one decode token's products: occupancy, memory, stall reasons.
step_ncufull() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    EXSA_CUDA_GRAPHS=off timeout 400 $NCU --clock-control none --set full -k regex:k_mmv \
        --launch-skip ${NCU_SKIP:-130} --launch-count ${NCU_COUNT:-12} \
        $EXSA bench -m "$f" -ngl 99 -p 0 -n 4 -r 1 >"$OUT/ncufull.txt" 2>"$OUT/ncufull.err"
    echo "ncu rc=$?"
    grep -E "k_mmv|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Grid Size|Block Size|Waves Per SM|L1/TEX Hit|L2 Hit|Stall|stall" "$OUT/ncufull.txt" | head -300 >"$OUT/ncufull-summary.txt"
    head -120 "$OUT/ncufull-summary.txt"
}

# The SASS of the decode products for one token (Q4_K glu, Q6_K), with instruction counts.
step_sass() {
    CUOBJ=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
    for o in build/src/cuda/mmv-k45.o build/src/cuda/mmv-q6k.o; do
        $CUOBJ -sass "$o" >"$OUT/$(basename $o .o).sass" 2>&1
    done
    awk '/Function :/ {f=$3} /^ +\/\*[0-9a-f]+\*\// {n[f]++} END {for (k in n) print n[k], k}' \
        "$OUT"/mmv-*.sass | sort -k2 | head -70
}

# The price of batch-invariant GPU kernels (exsa bench --deterministic), alternating, twice.
step_det() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    for rep in $(seq ${DET_ROUNDS:-2}); do
        for d in "" --deterministic; do
            echo "${d:-default} (round $rep):"
            bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 512 -n 128 $d
            bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 0 -n 128 -d 4096 $d
        done
    done
}

# Decode under each environment setting of $ENV_LIST ("-" for none), alternating, two rounds.
step_envab() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    for rep in 1 2; do
        for v in ${ENV_LIST:--}; do
            echo "$v (round $rep):"
            [ "$v" = - ] || export "$v"
            bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 0 -n 128
            [ "$v" = - ] || unset "${v%%=*}"
        done
    done
}

# Decode by each binary of $AB_BINS (default: this build), alternating, two rounds, on $AB_MODELS.
step_ab() {
    for m in ${AB_MODELS:-lfm2-1.2b:Q4_K_M}; do
        for rep in 1 2; do
            for b in ${AB_BINS:-$EXSA}; do
                echo "$m $b (round $rep):"
                EXSA=$b bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 0 -n 128
            done
        done
    done
}

# Aggregate decode of N sequences stepping together (one token each a step), 128-token prompts.
step_np() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    for n in ${NP_LIST:-1 4 16 32 64}; do
        bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 0 -n 128 -np $n
        if [ -n "${NP_ENV:-}" ]; then
            echo "$NP_ENV:"
            export "$NP_ENV"
            bench_one "${m%%:*}" "${m#*:}" -ngl 99 -p 0 -n 128 -np $n
            unset "${NP_ENV%%=*}"
        fi
    done
}

# bench/loadtest against exsa serve -ngl 99: N clients, one turn each (~128-token user message,
# 128 generated, ignore_eos), then one client's 10-turn chat (TTFT by turn).
step_load() {
    m=${PERF_MODEL:-lfm2-1.2b:Q4_K_M}
    f=/tmp/${m%%:*}-${m#*:}.gguf
    [ -f "$f" ] || $EXSA synth --preset "${m%%:*}" --type "${m#*:}" -o "$f" >/dev/null 2>&1
    $EXSA serve -m "$f" -ngl 99 --port 3124 --max-batch 64 --max-queue 256 -c 4096 \
        >"$OUT/load-serve.log" 2>&1 &
    pid=$!
    for i in $(seq 90); do curl -sf localhost:3124/v1/health >/dev/null && break; sleep 1; done
    for n in ${LOAD_LIST:-1 4 16 32 64}; do
        echo "-- $n clients"
        timeout 120 build/bench/loadtest -p 3124 -c $n -t ${LOAD_SECONDS:-15} --warmup 5 \
            --turns 1 --user-tokens 128 --max-tokens 128 2>&1 | grep -E "time|aggregate|requests"
    done
    echo "-- 10-turn chat"
    timeout 200 build/bench/loadtest -p 3124 -c 1 -n 10 --turns 10 --user-tokens 300 \
        --max-tokens 32 2>&1 | tail -14
    kill $pid
    wait $pid
    tail -5 "$OUT/load-serve.log"
}

step_serve() {
    f=/tmp/lfm2-350m-Q4_K_M.gguf
    [ -f "$f" ] || $EXSA synth --preset lfm2-350m --type Q4_K_M -o "$f" >/dev/null 2>&1
    $EXSA serve -m "$f" -ngl 99 --port 3123 >"$OUT/serve.log" 2>&1 &
    pid=$!
    for i in $(seq 60); do curl -sf localhost:3123/v1/health >/dev/null && break; sleep 1; done
    body='{"model":"lfm2-350m-Q4_K_M","messages":[{"role":"user","content":"Hello"}],"max_tokens":24,"temperature":0}'
    curl -s -H 'Content-Type: application/json' -d "$body" localhost:3123/v1/chat/completions | tee "$OUT/serve-chat.json"
    echo
    curl -sN -H 'Content-Type: application/json' -d "${body%\}},\"stream\":true}" \
        localhost:3123/v1/chat/completions | tee "$OUT/serve-stream.txt" | tail -4
    kill $pid
    wait $pid
    echo "serve exit status after SIGTERM: $?"
    tail -12 "$OUT/serve.log"
}

for s in "$@"; do
    case "$s" in
    test) shift; step_test "$@"; break ;;
    *) echo "== $s"; "step_$s" ;;
    esac
done
