"""Scaling benchmark: does a get-hit stay flat as the cache grows, and does
a large raw get run at memcpy speed?

What it measures, in one run:

1. get-hit ns at 10k, 100k, 1M and 10M entries: a cache sized for the
   entries (small int values, msgpack), filled, then --reads random keys of
   it read in a shuffled order (so the larger tables miss the CPU caches
   and the TLB as a real workload does). Median of --repeat passes; the
   ratio to the 10k row shows how flat it is. A dict of the same keys is
   measured beside it, passes interleaved, as the reference.
   The same caches are then read on a hot set: --hot keys (10,000) drawn
   once among all the entries, read in a shuffled order. Its row at 10M
   entries against its row at 10k shows what the table's size costs a
   workload whose hot keys fit the CPU caches (most real ones), apart
   from the cost of missing them with uniformly random keys.
   With --huge-pages try|on, a second cache of the same entries, made
   with that huge_pages= (named, in --huge-dir if given: a tmpfs mounted
   with huge=within_size or a hugetlbfs; else anonymous), is measured
   beside the first in the same passes; its column says what it got
   (``segment.info()["huge_pages"]``).
2. raw get MB/s for 1 KiB, 64 KiB and 1 MiB values (``serializer="raw"``:
   get returns a new bytes object, one copy out of shared memory) beside
   ``bytes(memoryview(buffer))``, a plain memcpy into a new bytes object of
   the same size.

Run (from the repository root; 10M entries need about 1 GiB of /dev/shm
and take a minute or two to fill):

    python benchmarks/scale.py
    python benchmarks/scale.py --sizes 10000,100000 --reads 100000   # quick
    python benchmarks/scale.py --huge-pages on --huge-dir /mnt/huge  # with and without
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def filled_cache(herdcache, stack, keys: list[str], **options):
    """A cache of ``keys`` (value: the key's index), closed by ``stack``."""
    size = max(64 << 20, len(keys) * BYTES_PER_ENTRY * 2)
    cache = stack.enter_context(herdcache.Cache(size=size, **options))
    if options.get("name"):
        stack.callback(cache.segment.unlink)
    for i, key in enumerate(keys):
        cache.set(key, i)
    assert cache.stats()["entries"] == len(keys), "the cache evicted: size it larger"
    return cache


def get_hit_row(herdcache, entries: int, args) -> tuple[list[float], list[float], str]:
    """ns per random get-hit with ``entries`` entries, over all of them and
    over a hot set: herdcache, dict and, with --huge-pages, herdcache on
    huge pages; and what those got."""
    keys = [f"key:{i}" for i in range(entries)]
    draw = random.Random(entries)
    sample = draw.choices(keys, k=args.reads)
    hot = draw.sample(keys, min(args.hot, entries))
    hot_sample = draw.choices(hot, k=args.reads)
    reference = dict(zip(keys, range(entries)))
    with contextlib.ExitStack() as stack:
        gets = [filled_cache(herdcache, stack, keys).get, reference.get]
        got = ""
        if args.huge_pages != "off":
            named = {"name": f"scale-huge-{os.getpid()}", "dir": args.huge_dir} if args.huge_dir else {}
            huge = filled_cache(herdcache, stack, keys, huge_pages=args.huge_pages, **named)
            gets.append(huge.get)
            got = huge.segment.info()["huge_pages"]
        return timed_reads(gets, sample, args.repeat), timed_reads(gets, hot_sample, args.repeat), got


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


def ratio_row(entries: int, ns: list[float], first: list[float]) -> list[str]:
    """A table row: ns and ratio to the first row, herdcache then dict,
    then the huge-page cache's ns and its ratio to the ordinary one's."""
    row = [f"{entries:,}", f"{ns[0]:,.0f}", f"{ns[0] / first[0]:.2f}", f"{ns[1]:,.0f}", f"{ns[1] / first[1]:.2f}"]
    if len(ns) > 2:
        row += [f"{ns[2]:,.0f}", f"{ns[2] / ns[0]:.2f}"]
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000", help="entry counts")
    parser.add_argument("--reads", type=int, default=200_000, help="random gets per pass (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (5)")
    parser.add_argument("--hot", type=int, default=10_000, help="keys in the hot set (10000)")
    parser.add_argument("--huge-pages", choices=["off", "try", "on"], default="off",
                        help="also measure a cache made with this huge_pages= (off)")  # fmt: skip
    parser.add_argument("--huge-dir", help="make that cache a named one here (a huge= tmpfs or a hugetlbfs)")
    args = parser.parse_args(argv)
    herdcache = load_herdcache("get", "set", "stats")
    print(machine_header("herdcache scaling benchmark"))

    tables: dict[str, list[list[str]]] = {"all": [], "hot": []}
    firsts: dict[str, list[float]] = {}
    got = ""
    for entries in (int(n) for n in args.sizes.split(",")):
        print(f"- filling {entries:,} entries", flush=True)
        *passes, got = get_hit_row(herdcache, entries, args)
        for name, ns in zip(tables, passes):
            tables[name].append(ratio_row(entries, ns, firsts.setdefault(name, ns)))
    header = ["entries", "herdcache ns", "÷ first row", "dict ns", "÷ first row"]
    if got:
        header += [f"huge_pages={args.huge_pages} ({got}) ns", "÷ herdcache ns"]
    print("\n## Random get-hit over all the entries, ns (lower is better)\n")
    print(markdown_table(header, tables["all"]))
    print(f"\n## Random get-hit over a hot set of {args.hot:,} of the entries, ns (lower is better)\n")
    print(markdown_table(header, tables["hot"]))

    rows = []
    for label, nbytes in VALUE_SIZES.items():
        cache_mbs, memcpy_mbs = raw_get_row(herdcache, nbytes, args.repeat)
        rows.append([label, f"{cache_mbs:,.0f}", f"{memcpy_mbs:,.0f}", f"{cache_mbs / memcpy_mbs:.0%}"])
    print("\n## Raw get of one value, MB/s (higher is better)\n")
    print(markdown_table(["value", "herdcache raw get", "bytes(memoryview)", "herdcache ÷ memcpy"], rows))


if __name__ == "__main__":
    main()
