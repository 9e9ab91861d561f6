#!/bin/sh
# 2026-12-08 (second session), call B, on branch gpu-persist: what call A leaves of the first
# session's plan: this tree against main's src (carry/old/src: `git archive main src | tar -x -C
# carry/old`), pp512, tg128 and tg128 at depth 4096 alternated on Q4_K_M, pp512 on F16; -np N
# with the batched int8 products and without; the conv fusion on and off; the 3-block-grid pass under
# compute-sanitizer. Carry carry/fxA, carry/debs, carry/old.
. tools/gpu-calls/call-lib.sh
export EXSA_GPU_FIXTURES=lfm2-tiny-Q4_K_M
export EXSA_CUDA_MMQ_MIN=2
R=/tmp/sysroot
L=$R/usr/lib/x86_64-linux-gnu
MK="make -j8 CUDA=1 DEB_HEADERS= CFLAGS=-I$R/usr/include LDFLAGS=-L$L"
rm -rf /tmp/oldtree && mkdir /tmp/oldtree && cp -a . /tmp/oldtree/ &&
    rm -rf /tmp/oldtree/src /tmp/oldtree/build && cp -a carry/old/src /tmp/oldtree/src
mkdir -p $R && for f in carry/debs/*.deb; do dpkg -x "$f" $R; done
(cd /tmp/oldtree && nice $MK LDFLAGS="-L$L -Wl,-rpath,$L" build/exsa >"$OUT/build-old.log" 2>&1 ||
    tail -5 "$OUT/build-old.log") &
sh tools/device-run.sh 2>&1 | tail -3 # builds this tree
wait
echo "both built: $(el) s"
EXSA=build/exsa
f=/tmp/lfm2-1.2b-Q4_K_M.gguf
f16=/tmp/lfm2-1.2b-F16.gguf
$EXSA synth --preset lfm2-1.2b --type Q4_K_M -o $f >/dev/null 2>&1
$EXSA synth --preset lfm2-1.2b --type F16 -o $f16 >/dev/null 2>&1
for rep in 1 2; do
    for b in /tmp/oldtree/build/exsa build/exsa; do
        room 40 || break
        echo "$b (round $rep):"
        timeout 40 $b bench -m $f -ngl 99 -p 512 -n 128 -r 3 2>>"$OUT/ab.err" | grep -E "^\| lfm2"
        timeout 30 $b bench -m $f16 -ngl 99 -p 512 -n 0 -r 3 2>>"$OUT/ab.err" | grep -E "^\| lfm2"
        timeout 40 $b bench -m $f -ngl 99 -p 0 -n 128 -d 4096 -r 2 2>>"$OUT/ab.err" | grep -E "^\| lfm2"
    done
done
echo "after ab: $(el) s"
np_one() { # N MMQ_MIN
    echo "-np $1 EXSA_CUDA_MMQ_MIN=$2:"
    EXSA_CUDA_MMQ_MIN=$2 timeout 40 $EXSA bench -m $f -ngl 99 -p 0 -n 128 -r 2 -np $1 2>>"$OUT/np.err" | grep -E "^\| lfm2"
}
for n in 32 4 64 16; do room 60 && np_one $n 2 && np_one $n 0; done
room 30 && np_one 1 2
echo "after np: $(el) s"
for v in 0 1 0 1; do
    room 30 || break
    echo "EXSA_CUDA_FUSE_CONV=$v:"
    EXSA_CUDA_FUSE_CONV=$v timeout 30 $EXSA bench -m $f -ngl 99 -p 0 -n 128 -r 3 2>>"$OUT/fc.err" | grep -E "^\| lfm2"
done
if room 60; then
    EXSA_CUDA_MMQ_MIN=0 EXSA_CUDA_MMV_MAX_BLOCKS=3 timeout $((560 - $(el))) compute-sanitizer --tool memcheck \
        --print-limit 3 build/tests/test_cuda test_matmul test_graph_after_unprepare >"$OUT/mc.log" 2>&1
    echo "memcheck rc=$?"
    grep -E "Invalid|at 0x|by thread|Address|is out of bounds|FAIL|ERROR SUMMARY|passed" "$OUT/mc.log" | head -30
fi
grep -h "exsa: cuda" "$OUT"/*.err 2>/dev/null | sort | uniq -c | head
echo "total $(el) s"
