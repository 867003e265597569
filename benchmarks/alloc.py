"""Allocator benchmark: what does a set cost in a full cache when the values
differ in size (so the arena fragments) against values of one size?

What it measures, in one run: for each eviction policy (``sieve``,
``s3fifo``), a --size cache (raw values, no msgpack) is first filled well
past capacity, then --sets sets of new keys are timed. The "mixed" rows
draw each value's size uniformly from 100 to 999 bytes (a fixed seed); the
"uniform" rows use one size, the mixed sizes' mean (549 bytes), so both
store the same bytes. Every set evicts. Median of --repeat passes, in µs
per set; the last column is mixed ÷ uniform for the same policy, which is
what a fragmented arena costs (1.0 would be free).

Run (from the repository root; about ten seconds):

    python benchmarks/alloc.py
    python benchmarks/alloc.py --sets 5000 --repeat 3     # quick
"""

from __future__ import annotations

import argparse
import random

from _common import load_herdcache, machine_header, markdown_table
from _timing import median, now_ns

POLICIES = ("sieve", "s3fifo")
MIXED = (100, 999)  # value sizes, bytes, inclusive
UNIFORM = sum(MIXED) // 2


def values_of(sizes: list[int]) -> list[bytes]:
    """One bytes value per size (shared prefixes are fine: raw values are not compressed)."""
    blob = random.Random(0).randbytes(max(sizes))
    return [blob[:n] for n in sizes]


def us_per_set(herdcache, policy: str, values: list[bytes], args) -> float:
    """Median µs per set of ``values`` under new keys into a full cache."""
    timings = []
    with herdcache.Cache(size=args.size, serializer="raw", eviction=policy) as cache:
        fill = max(4 * args.size // UNIFORM, len(values))
        for i in range(fill):  # well past capacity: the arena is as fragmented as it gets
            cache.set(f"fill:{i}", values[i % len(values)])
        for round_ in range(args.repeat):
            keys = [f"r{round_}:{i}" for i in range(len(values))]
            start = now_ns()
            for key, value in zip(keys, values):
                cache.set(key, value)
            timings.append((now_ns() - start) / len(values) / 1e3)
        assert cache.stats()["evictions"] > 0, "the cache never evicted: make --size smaller"
    return median(timings)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4 << 20, help="cache bytes (4 MiB)")
    parser.add_argument("--sets", type=int, default=20_000, help="timed sets per pass (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (5)")
    args = parser.parse_args(argv)
    herdcache = load_herdcache("get", "set", "stats")
    print(machine_header("herdcache allocator benchmark"))

    rng = random.Random(1)
    mixed = values_of([rng.randint(*MIXED) for _ in range(args.sets)])
    uniform = values_of([UNIFORM] * args.sets)
    rows = []
    for policy in POLICIES:
        mixed_us = us_per_set(herdcache, policy, mixed, args)
        uniform_us = us_per_set(herdcache, policy, uniform, args)
        rows.append([policy, f"{mixed_us:.2f}", f"{uniform_us:.2f}", f"{mixed_us / uniform_us:.2f}"])
    print(f"\n## Set into a full {args.size >> 20} MiB cache, µs per set (lower is better)\n")
    print(markdown_table(["eviction", f"mixed {MIXED[0]}–{MIXED[1]} B", f"uniform {UNIFORM} B", "mixed ÷ uniform"], rows))


if __name__ == "__main__":
    main()
