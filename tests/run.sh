#!/bin/sh
# Runs every test binary given, TEST_JOBS at a time (default: the number of cores; the longest
# first, by the list's order in LONG), prints each one's output whole in the order given, and
# the summed closing line "N passed, N failed". A binary that prints no summary, or exits non-zero
# with none failed, counts as one failure.
jobs=${TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
dir=$(mktemp -d "${TMPDIR:-/tmp}/exsa-tests-XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT

# The slow ones start first so that the short ones fill in beside them.
LONG="test_model test_server test_cli test_server_api test_server_sched test_constrained test_server_cache"
order=""
for l in $LONG; do
    for t in "$@"; do [ "$(basename "$t")" = "$l" ] && order="$order $t"; done
done
for t in "$@"; do
    case " $order " in *" $t "*) ;; *) order="$order $t" ;; esac
done

# Each test's output and exit status go to files named after it; xargs keeps jobs running.
printf '%s\n' $order | xargs -P "$jobs" -I{} sh -c \
    'k=$(echo "$1" | tr / _); "$1" >"$2/$k.out" 2>&1; echo $? >"$2/$k.rc"' sh {} "$dir"

pass=0; fail=0; broken=""
for t in "$@"; do
    key=$(echo "$t" | tr '/' '_')
    echo "== $t"
    cat "$dir/$key.out"
    rc=$(cat "$dir/$key.rc" 2>/dev/null || echo 255)
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$dir/$key.out" | tail -n 1)
    if [ -z "$line" ]; then fail=$((fail + 1)); broken="$broken $t(rc=$rc,no summary)"; continue; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    pass=$((pass + p)); fail=$((fail + f))
    [ "$rc" -ne 0 ] && [ "$f" = 0 ] && { fail=$((fail + 1)); broken="$broken $t(rc=$rc)"; }
done
[ -n "$broken" ] && echo "broken:$broken"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
