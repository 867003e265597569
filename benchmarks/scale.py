"""Scaling benchmark: does a get-hit stay flat as the cache grows, and does
a large raw get run at memcpy speed?

What it measures, in one run:

1. get-hit ns at 10k, 100k, 1M and 10M entries: a cache sized for the
   entries (small int values, msgpack), filled, then --reads random keys of
   it read in a shuffled order (so the larger tables miss the CPU caches
   and the TLB as a real workload does). Median of --repeat passes; the
   ratio to the 10k row shows how flat it is. A dict of the same keys is
   measured beside it, passes interleaved, as the reference.
2. raw get MB/s for 1 KiB, 64 KiB and 1 MiB values (``serializer="raw"``:
   get returns a new bytes object, one copy out of shared memory) beside
   ``bytes(memoryview(buffer))``, a plain memcpy into a new bytes object of
   the same size.

Run (from the repository root; 10M entries need about 1 GiB of /dev/shm
and take a minute or two to fill):

    python benchmarks/scale.py
    python benchmarks/scale.py --sizes 10000,100000 --reads 100000   # quick
"""

from __future__ import annotations

import argparse
import random

from _common import load_herdcache, machine_header, markdown_table
from _timing import median, now_ns

BYTES_PER_ENTRY = 96  # a generous bound for a small entry (header, key, value, bucket)
VALUE_SIZES = {"1 KiB": 1 << 10, "64 KiB": 64 << 10, "1 MiB": 1 << 20}


def timed_reads(gets, keys: list[str], repeat: int) -> list[float]:
    """Median ns per call of each of ``gets`` over ``repeat`` passes of
    ``keys`` (after a warm-up), their passes interleaved so that a noisy
    moment of the machine hits them alike."""
    passes: list[list[float]] = [[] for _ in gets]
    for round_ in range(repeat + 1):
        for get, timings in zip(gets, passes):
            start = now_ns()
            for key in keys:
                get(key)
            if round_:
                timings.append((now_ns() - start) / len(keys))
    return [median(timings) for timings in passes]


def get_hit_row(herdcache, entries: int, reads: int, repeat: int) -> tuple[float, float]:
    """(herdcache ns, dict ns) per random get-hit with ``entries`` entries."""
    size = max(64 << 20, entries * BYTES_PER_ENTRY * 2)
    keys = [f"key:{i}" for i in range(entries)]
    sample = random.Random(entries).choices(keys, k=reads)
    reference = {}
    with herdcache.Cache(size=size) as cache:
        for i, key in enumerate(keys):
            cache.set(key, i)
            reference[key] = i
        assert cache.stats()["entries"] == entries, "the cache evicted: size it larger"
        cache_ns, dict_ns = timed_reads([cache.get, reference.get], sample, repeat)
    return cache_ns, dict_ns


def raw_get_row(herdcache, nbytes: int, repeat: int) -> tuple[float, float]:
    """(herdcache MB/s, memcpy MB/s) for one value of ``nbytes``."""
    count = max(16, (64 << 20) // nbytes)  # enough calls for a steady figure
    keys = ["v"] * count
    source = bytearray(random.randbytes(nbytes))
    view = memoryview(source)
    with herdcache.Cache(size=256 << 20, serializer="raw", max_value_size=nbytes) as cache:
        cache.set("v", bytes(source))
        cache_ns, memcpy_ns = timed_reads([cache.get, lambda _key: bytes(view)], keys, repeat)
    return nbytes / cache_ns * 1e3, nbytes / memcpy_ns * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000", help="entry counts")
    parser.add_argument("--reads", type=int, default=200_000, help="random gets per pass (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (5)")
    args = parser.parse_args(argv)
    herdcache = load_herdcache("get", "set", "stats")
    print(machine_header("herdcache scaling benchmark"))

    rows, first = [], None
    for entries in (int(n) for n in args.sizes.split(",")):
        print(f"- filling {entries:,} entries", flush=True)
        cache_ns, dict_ns = get_hit_row(herdcache, entries, args.reads, args.repeat)
        first = first or (cache_ns, dict_ns)
        rows.append([f"{entries:,}", f"{cache_ns:,.0f}", f"{cache_ns / first[0]:.2f}",
                     f"{dict_ns:,.0f}", f"{dict_ns / first[1]:.2f}"])  # fmt: skip
    print("\n## Random get-hit, ns (lower is better)\n")
    print(markdown_table(["entries", "herdcache ns", "÷ first row", "dict ns", "÷ first row"], rows))

    rows = []
    for label, nbytes in VALUE_SIZES.items():
        cache_mbs, memcpy_mbs = raw_get_row(herdcache, nbytes, args.repeat)
        rows.append([label, f"{cache_mbs:,.0f}", f"{memcpy_mbs:,.0f}", f"{cache_mbs / memcpy_mbs:.0%}"])
    print("\n## Raw get of one value, MB/s (higher is better)\n")
    print(markdown_table(["value", "herdcache raw get", "bytes(memoryview)", "herdcache ÷ memcpy"], rows))


if __name__ == "__main__":
    main()
