#!/usr/bin/env bash
# Fuzz herdcache (fuzz_herdcache.py): build the extension with clang and
# -fsanitize=undefined,fuzzer-no-link, so that libFuzzer (atheris's) sees
# the C core's branches as well as Python's and UBSan checks the core,
# then fuzz for SECONDS (default 60,
# what .ci/run runs) from the committed corpus.  New inputs go to a
# temporary copy of the corpus; a finding is written to $FUZZ_ARTIFACTS
# (default: a temporary directory, printed) and fails the run.  Any input
# that takes over 1 s is a finding (-timeout=1, and the harness's own
# timing: fuzz_herdcache.py); the log ends with the slowest input's time.
#
#   fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
work=$(mktemp -d)
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts" "$work/corpus"
cp "$root"/fuzz/corpus/* "$work/corpus/"
cp -r "$root/src" "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$work/"
rm -f "$work"/src/herdcache/_core*.so
# Without HERDCACHE_WERROR: -Werror is the gcc build's policy (.ci/run
# builds the sdist with it); clang's -Wextra adds warnings of its own
# (missing-field-initializers on CPython's sentinel idioms) that would stop
# the fuzzer from running at all.  A failed build prints its log.
if ! (cd "$work" && env -u HERDCACHE_WERROR CC=clang \
    CFLAGS="-fsanitize=undefined,fuzzer-no-link -fno-sanitize-recover=all -g -O1" \
    python setup.py -q build_ext --inplace >"$work/build.log" 2>&1); then
    tail -40 "$work/build.log" >&2
    echo "fuzz/run.sh: the clang build of the extension failed (log above)" >&2
    exit 1
fi
# atheris's libFuzzer with UBSan's runtime, preloaded so that the
# extension's coverage and UBSan hooks resolve when Python loads it.
preload=$(python -c "import atheris; print(atheris.path())")/ubsan_with_fuzzer.so
echo "fuzzing for ${seconds}s; findings go to $artifacts"
cd "$work"
LD_PRELOAD="$preload" UBSAN_OPTIONS=print_stacktrace=1 \
PYTHONPATH="$work/src" python "$root/fuzz/fuzz_herdcache.py" \
    -max_total_time="$seconds" -timeout=1 -rss_limit_mb=4096 \
    -artifact_prefix="$artifacts/" "$@" "$work/corpus"
