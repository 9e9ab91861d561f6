#!/bin/sh
# fuzz.sh: what `make fuzz` runs (sh tests/fuzz.sh BUILD SECONDS NAME...): each target
# BUILD/fuzz_NAME for SECONDS from its seed corpus tests/fuzz/NAME/ (new inputs kept in
# BUILD/NAME.corpus, crashes in BUILD/NAME-crash-*), with tests/fuzz/NAME.dict when present.
# Prints one line per target (seconds, executions, corpus size, result) and exits 1 when any
# target found a crash, a leak or a timeout.
build=$1; secs=$2; shift 2
failed=""
for name in "$@"; do
    corpus="$build/$name.corpus"; seeds="tests/fuzz/$name"
    mkdir -p "$corpus"
    dict=""; [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    log="$build/$name.log"
    "$build/fuzz_$name" -max_total_time="$secs" -max_len=8192 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$build/$name-" $dict "$corpus" "$seeds" > "$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    units=$(ls "$corpus" | wc -l)
    if [ $rc -eq 0 ]; then result=ok; else result="FAILED (rc=$rc, see $log)"; failed="$failed $name"; fi
    echo "fuzz_$name: $secs s, ${execs:-?} executions, corpus $units files: $result"
done
[ -z "$failed" ] || { echo "fuzz targets that failed:$failed"; exit 1; }
