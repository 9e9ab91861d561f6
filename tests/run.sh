#!/bin/sh
# Runs every test binary given, echoes their output, and prints the summed closing line.
pass=0; fail=0; broken=""
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    echo "$out"
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then fail=$((fail + 1)); broken="$broken $t(rc=$rc,no summary)"; continue; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    pass=$((pass + p)); fail=$((fail + f))
    [ $rc -ne 0 ] && [ "$f" = 0 ] && { fail=$((fail + 1)); broken="$broken $t(rc=$rc)"; }
done
[ -n "$broken" ] && echo "broken:$broken"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
