#!/usr/bin/env bash
# Check the Promela models with spin (RELIABILITY.md scenario 30).
#
#   formal/run.sh          what .ci/run runs (about 1 minute of CPU)
#   formal/run.sh --long   also the safety searches with two deaths
#
# For each model: a safety search (assertions, invalid end states), then
# a search for non-progress cycles under weak fairness (-l -f).  Then the
# model of flight.c before the fix of defect 11 (-DUNFIXED_11), where spin
# must find the trace in which a process waits for its own flight.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.pml "$work"
cd "$work"

# pan MODEL KIND [spin -D flags...]: KIND is safety or liveness.
pan() {
    local model=$1 kind=$2 out
    shift 2
    spin "$@" -a "$model.pml" >/dev/null
    if [ "$kind" = safety ]; then
        gcc -O2 -DSAFETY -o pan pan.c
        out=$(./pan -m400000)
    else
        gcc -O2 -DNP -o pan pan.c
        out=$(./pan -l -f -m400000)
    fi
    echo "$out" | grep -q "errors: 0" || { echo "$out"; spin -t -p -g "$@" "$model.pml" | tail -60; return 1; }
    printf '  %-10s %-9s %-28s %s\n' "$model" "$kind" "$*" \
        "$(echo "$out" | grep -o '[0-9.e+]* states, stored' | head -1)"
}

pan lock_cond safety
pan lock_cond liveness
pan flight safety
pan flight liveness
if [ "${1:-}" = --long ]; then
    pan lock_cond safety -DMAXDEAD=2
    pan flight safety -DMAXDEAD=2
fi

# The model must still find defect 11 in the code as it was.
spin -DUNFIXED_11 -a flight.pml >/dev/null
gcc -O2 -DSAFETY -o pan pan.c
out=$(./pan -m400000 || true)
if echo "$out" | grep -q "assertion violated (kowner!=(_pid+1))"; then
    echo "  flight     UNFIXED_11: spin finds a process waiting for its own flight (defect 11), as it must"
else
    echo "flight.pml -DUNFIXED_11: spin no longer finds defect 11; the model lost it" >&2
    exit 1
fi
