"""The per-process decoded layer (``Cache(local_items=N)``) against the
per-process caches users pick today, and against herdcache without it.

Run by ``benchmarks/cache.py`` (its last section), or alone:

    python benchmarks/local.py            # 1M keys for the Zipf row, a minute or two
    python benchmarks/local.py --quick    # 100k keys

Contenders, each holding at most --local-items (10,000) decoded values:
``functools.lru_cache`` around the load, ``cachetools.TTLCache``,
``cachebox.LRUCache``, ``theine.Cache``, herdcache with
``local_items=10_000``, and herdcache without the layer.  A per-process
cache's miss loads the value from a dict of msgpack'd bytes and unpacks
it (the work a shared cache saves); herdcache's shared table holds every
key, so its "miss" is a shared-table hit.  Rows, median ns per request:

- hot keys: 100 keys, all cached, read round and round;
- Zipf(0.99) over --zipf-keys keys (1M): a stream of 200k requests;
- write-heavy: 10,000 keys, alternately a set and a get of random keys
  (lru_cache has no set: n/a).
"""

from __future__ import annotations

import argparse
import functools
import random

import msgpack
from _common import PeerUnavailable, load_herdcache, markdown_table, package_version, skip
from _timing import median, now_ns

MISSING = object()
HOT_KEYS = 100
WRITE_KEYS = 10_000
STREAM = 200_000


def make_value(i: int) -> dict:
    """About 100 bytes msgpack'd (as benchmarks/cache.py's values)."""
    return {"id": i, "user": f"user-{i:08d}", "email": f"user-{i:08d}@example.org",
            "score": i / 7, "active": i % 3 != 0, "tags": ["alpha", "beta", "gamma"]}  # fmt: skip


class Store:
    """The backing store a per-process cache loads from on a miss."""

    def __init__(self, keys: int) -> None:
        self.packed = {f"key:{i}": msgpack.packb(make_value(i)) for i in range(keys)}

    def load(self, key: str):
        return msgpack.unpackb(self.packed[key])


def get_or_load(cache_get, cache_set, load):
    """get(key) for a cache with get(key, default) and set(key, value)."""

    def get(key):
        value = cache_get(key, MISSING)
        if value is MISSING:
            value = load(key)
            cache_set(key, value)
        return value

    return get


def lru_cache_peer(store: Store, size: int):
    return functools.lru_cache(maxsize=size)(store.load), None


def cachetools_peer(store: Store, size: int):
    import cachetools

    cache = cachetools.TTLCache(maxsize=size, ttl=300)
    return get_or_load(cache.get, cache.__setitem__, store.load), cache.__setitem__


def cachebox_peer(store: Store, size: int):
    import cachebox

    cache = cachebox.LRUCache(size)
    return get_or_load(cache.get, cache.insert, store.load), cache.insert


def theine_peer(store: Store, size: int):
    import theine

    cache = theine.Cache(size)

    def cache_get(key, default):
        value, found = cache.get(key)
        return value if found else default

    return get_or_load(cache_get, cache.set, store.load), cache.set


def herdcache_peer(store: Store, size: int, local_items: int):
    herdcache = load_herdcache("get", "set")
    nbytes = max(64 << 20, len(store.packed) * 256)
    cache = herdcache.Cache(size=nbytes, local_items=local_items)
    for key, data in store.packed.items():
        cache.set(key, msgpack.unpackb(data))
    return cache.get, cache.set


PEERS = {
    "functools.lru_cache": (lru_cache_peer, "python"),
    "cachetools.TTLCache": (cachetools_peer, "cachetools"),
    "cachebox.LRUCache": (cachebox_peer, "cachebox"),
    "theine.Cache": (theine_peer, "theine"),
    "herdcache, local_items=10_000": (None, "herdcache"),
    "herdcache, no local layer": (None, "herdcache"),
}


def make_peer(name: str, store: Store, size: int):
    if name.startswith("herdcache"):
        return herdcache_peer(store, size, size if "local_items" in name else 0)
    factory, package = PEERS[name]
    try:
        return factory(store, size)
    except ImportError:
        raise PeerUnavailable(f"pip install {package}") from None


def timed(run, repeat: int) -> float:
    """Median ns per request of run() -> (elapsed ns, requests), after a warm-up."""
    run()
    return median([elapsed / count for elapsed, count in (run() for _ in range(repeat))])


def read_stream(get, stream):
    def run():
        start = now_ns()
        for key in stream:
            get(key)
        return now_ns() - start, len(stream)

    return run


def mixed_stream(get, put, ops):
    def run():
        start = now_ns()
        for key, value in ops:
            if value is None:
                get(key)
            else:
                put(key, value)
        return now_ns() - start, len(ops)

    return run


def zipf_stream(keys: int, requests: int, seed: int = 1) -> list[str]:
    import numpy

    rng = numpy.random.default_rng(seed)
    cdf = numpy.cumsum(numpy.arange(1, keys + 1, dtype=numpy.float64) ** -0.99)
    ranks = numpy.minimum(numpy.searchsorted(cdf / cdf[-1], rng.random(requests)), keys - 1)
    return [f"key:{k}" for k in rng.permutation(keys)[ranks].tolist()]


def workloads(zipf_keys: int) -> dict:
    rng = random.Random(3)
    hot = [f"key:{i}" for i in range(HOT_KEYS)] * 100
    mixed = []
    for i in range(STREAM // 4):
        key = f"key:{rng.randrange(WRITE_KEYS)}"
        mixed.append((key, make_value(i) if i % 2 == 0 else None))
    return {"hot keys": hot, "Zipf(0.99)": zipf_stream(zipf_keys, STREAM), "write-heavy": mixed}


def measure(args) -> dict[str, dict[str, float | None]]:
    store = Store(args.zipf_keys)
    streams = workloads(args.zipf_keys)
    results: dict[str, dict[str, float | None]] = {}
    for name in PEERS:
        try:
            get, put = make_peer(name, store, args.local_items)
        except PeerUnavailable as exc:
            skip(name, exc)
            continue
        print(f"- running {name}", flush=True)
        row = {}
        for workload, stream in streams.items():
            if workload == "write-heavy":
                row[workload] = None if put is None else timed(mixed_stream(get, put, stream), args.repeat)
            else:
                row[workload] = timed(read_stream(get, stream), args.repeat)
        results[name] = row
    return results


def report(results) -> None:
    lru = results.get("functools.lru_cache", {})
    plain = results.get("herdcache, no local layer", {})
    names = list(next(iter(results.values())))
    headers = ["peer"]
    for workload in names:
        headers += [f"{workload} ns", "×lru", "×no-layer"]
    rows = []
    for peer, row in results.items():
        cells = [peer]
        for workload in names:
            ns = row[workload]
            cells += ["n/a" if ns is None else f"{ns:,.0f}",
                      _ratio(ns, lru.get(workload)), _ratio(ns, plain.get(workload))]  # fmt: skip
        rows.append(cells)
    print(markdown_table(headers, rows))
    print("\n×lru: time over functools.lru_cache's; ×no-layer: over herdcache without the layer.")


def _ratio(ns, base) -> str:
    return "—" if ns is None or not base else f"{ns / base:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zipf-keys", type=int, default=1_000_000, help="keys of the Zipf row (1000000)")
    parser.add_argument("--local-items", type=int, default=10_000, help="entries per cache (10000)")


def section(args) -> None:
    """The section benchmarks/cache.py prints."""
    versions = ", ".join(f"{p} {package_version(p)}" for p in ("cachetools", "cachebox", "theine"))
    print(f"\n## The per-process decoded layer: median ns per request ({versions})\n")
    report(measure(args))


def main(argv=None) -> None:
    from _common import machine_header

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (5)")
    parser.add_argument("--quick", action="store_true", help="100k keys in the Zipf row, 3 passes")
    args = parser.parse_args(argv)
    if args.quick:
        args.zipf_keys, args.repeat = 100_000, 3
    print(machine_header("herdcache local layer benchmark"))
    section(args)


if __name__ == "__main__":
    main()
