#!/usr/bin/env bash
# Install everything the benchmarks compare herdcache against. Idempotent:
# what is already there is left alone, so running it again changes nothing.
#
#   bash benchmarks/install-peers.sh            # uses python3
#   PYTHON=/path/to/venv/bin/python bash benchmarks/install-peers.sh
#
# Debian packages (only as root, only the missing ones): redis-server, memcached.
# Python packages (into $PYTHON's environment): redis pymemcache diskcache lmdb
# UltraDict dogpile.cache msgpack faster-fifo posix-ipc numpy libcachesim cachetools
# cachebox theine.
set -euo pipefail

PYTHON=${PYTHON:-python3}
apt_packages=(redis-server memcached)
pip_packages=(redis pymemcache diskcache lmdb UltraDict dogpile.cache msgpack faster-fifo posix-ipc numpy libcachesim cachetools cachebox theine)
# The modules those pip packages provide, in the same order.
modules=(redis pymemcache diskcache lmdb UltraDict dogpile.cache msgpack faster_fifo posix_ipc numpy libcachesim cachetools cachebox theine)

missing_apt=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing_apt+=("$package")
done
if ((${#missing_apt[@]} == 0)); then
    echo "apt: ${apt_packages[*]} already installed"
elif [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "apt: installing ${missing_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing_apt[@]}" || {
        apt-get update -q && apt-get install -y -q "${missing_apt[@]}"
    }
else
    echo "apt: not root (or no apt-get): install ${missing_apt[*]} yourself," \
        "e.g. sudo apt-get install -y ${missing_apt[*]}; the benchmarks skip them until then" >&2
fi

missing_pip=()
for i in "${!modules[@]}"; do
    "$PYTHON" -c "import ${modules[$i]}" 2>/dev/null || missing_pip+=("${pip_packages[$i]}")
done
if ((${#missing_pip[@]} == 0)); then
    echo "pip: ${pip_packages[*]} already installed"
else
    echo "pip: installing ${missing_pip[*]}"
    "$PYTHON" -m pip install -q "${missing_pip[@]}"
fi
