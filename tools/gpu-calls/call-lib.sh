# call-lib.sh: what the call scripts of this folder share (sourced from the tree's root): the
# fixtures a call carries (carry/fxA unless EXSA_FIXTURES says otherwise), $OUT, and el / room:
# the seconds since the call began, and whether N more fit in the tool's 600 s (570 kept).
export EXSA_FIXTURES=${EXSA_FIXTURES:-$PWD/carry/fxA}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$(date +%s)
el() { echo $(($(date +%s) - t0)); }
room() { [ $(($(date +%s) - t0 + $1)) -lt 570 ]; }
