"""Eviction benchmark: herdcache's miss ratio beside libCacheSim's policies.

What it measures: the same request streams are replayed against
libCacheSim (the simulator of the SIEVE and S3-FIFO papers: LRU, SIEVE,
S3-FIFO, W-TinyLFU, ARC and Belady's offline optimum) and against a real
herdcache.Cache, at cache sizes of 1 %, 10 % and 30 % of the keys. It prints
the miss ratio of each, and herdcache's misses relative to the best online
policy's. Every request counts, cold misses included, the same for all.

The streams (--keys distinct keys, --requests requests each):

- zipf-0.8, zipf-1.0, zipf-1.2: key of rank r asked with weight 1/r^alpha;
  ranks map to key ids through a random permutation (popular keys are not
  neighbours, which matters to a real cache's hashing).
- scan: Zipf(1.0), and after every tenth of the stream a one-pass scan of
  --keys/10 fresh keys never asked again (a batch job walking a table). The
  scan keys are extra: the cache size is a share of the Zipf keys.
- shifting: Zipf(1.0) whose rank-to-key permutation is redrawn after every
  tenth of the stream (yesterday's hot keys go cold at once).

libCacheSim runs in C on a trace file this script writes to a temporary
directory (libCacheSim's oracleGeneral format, with each request's next
access time for Belady); it downloads nothing. herdcache is measured, not
simulated: each request is a get, and a miss is followed by a set; the
cache's size is found by filling real caches until it keeps the wanted
number of entries (see herdcache_capacity_bytes). herdcache runs with each
of its policies, ``eviction="sieve"`` and ``eviction="s3fifo"``: the
second beside libCacheSim's S3-FIFO checks that it is the same policy. Values are fixed-size
and sized so that even the 1 % cache spans a few MiB.

Run (from the repository root; needs numpy and libcachesim:
``pip install numpy libcachesim``):

    python benchmarks/eviction.py              # 100k keys, 1M requests per stream
    python benchmarks/eviction.py --quick      # 10k keys, 100k requests
    python benchmarks/eviction.py --streams scan,shifting --fractions 0.1

Miss ratios depend only on the streams and the seed, not on the machine;
herdcache's sizing is within 1 % of the target entry count.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import PeerUnavailable, load_herdcache, machine_header, markdown_table, package_version, skip

try:
    import libcachesim
    import numpy
except ImportError as missing:  # pragma: no cover - reported at start
    raise SystemExit(f"eviction.py needs numpy and libcachesim ({missing}): pip install numpy libcachesim")

POLICIES = {
    "LRU": libcachesim.LRU,
    "SIEVE": libcachesim.Sieve,
    "S3-FIFO": libcachesim.S3FIFO,
    "W-TinyLFU": libcachesim.WTinyLFU,
    "ARC": libcachesim.ARC,
    "Belady (offline)": libcachesim.Belady,
}
ONLINE = [name for name in POLICIES if not name.startswith("Belady")]
STREAMS = ["zipf-0.8", "zipf-1.0", "zipf-1.2", "scan", "shifting"]
PHASES = 10  # the scan and shifting streams change every tenth
SEGMENT_FLOOR = 4 << 20  # herdcache values are sized so the smallest cache spans this


# --- the request streams -----------------------------------------------------


def zipf_ranks(keys: int, requests: int, alpha: float, rng) -> "numpy.ndarray":
    """``requests`` ranks in 0..keys-1; rank r is drawn with weight 1/(r+1)^alpha."""
    weights = numpy.arange(1, keys + 1, dtype=numpy.float64) ** -alpha
    cdf = numpy.cumsum(weights)
    cdf /= cdf[-1]
    ranks = numpy.searchsorted(cdf, rng.random(requests), side="right")
    return numpy.minimum(ranks, keys - 1)


def zipf_stream(keys: int, requests: int, alpha: float, seed: int) -> "numpy.ndarray":
    """Key ids of a Zipf(alpha) stream over ``keys`` keys."""
    rng = numpy.random.default_rng(seed)
    return rng.permutation(keys)[zipf_ranks(keys, requests, alpha, rng)]


def scan_stream(keys: int, requests: int, seed: int) -> "numpy.ndarray":
    """Zipf(1.0), with a one-pass scan of keys/10 fresh ids after each tenth."""
    base = numpy.array_split(zipf_stream(keys, requests, 1.0, seed), PHASES)
    scan_length = max(1, keys // 10)
    parts = []
    for phase, chunk in enumerate(base):
        first = keys + phase * scan_length
        parts += [chunk, numpy.arange(first, first + scan_length)]
    return numpy.concatenate(parts)


def shifting_stream(keys: int, requests: int, seed: int) -> "numpy.ndarray":
    """Zipf(1.0) whose rank-to-key permutation is redrawn every tenth."""
    rng = numpy.random.default_rng(seed)
    phases = numpy.array_split(zipf_ranks(keys, requests, 1.0, rng), PHASES)
    return numpy.concatenate([rng.permutation(keys)[ranks] for ranks in phases])


def make_stream(name: str, keys: int, requests: int, seed: int) -> "numpy.ndarray":
    if name.startswith("zipf-"):
        return zipf_stream(keys, requests, float(name[5:]), seed)
    return {"scan": scan_stream, "shifting": shifting_stream}[name](keys, requests, seed)


# --- libCacheSim ---------------------------------------------------------------

ORACLE_GENERAL = numpy.dtype(
    [("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access", "<i8")]
)


def next_access(stream: "numpy.ndarray") -> "numpy.ndarray":
    """For each request, the index of the next request for the same key (-1: none)."""
    order = numpy.argsort(stream, kind="stable")
    repeats = stream[order[1:]] == stream[order[:-1]]
    result = numpy.full(len(stream), -1, dtype=numpy.int64)
    result[order[:-1][repeats]] = order[1:][repeats]
    return result


def write_trace(stream: "numpy.ndarray", path: str) -> None:
    """``stream`` as an oracleGeneral trace: unit-size objects, so a cache
    size is an entry count."""
    records = numpy.zeros(len(stream), dtype=ORACLE_GENERAL)
    records["time"] = numpy.arange(len(stream)) // 1000 + 1
    records["obj_id"] = stream + 1
    records["obj_size"] = 1
    records["next_access"] = next_access(stream)
    records.tofile(path)


def simulated_miss_ratio(policy, trace_path: str, capacity: int) -> float:
    reader = libcachesim.TraceReader(trace_path, libcachesim.TraceType.ORACLE_GENERAL_TRACE)
    miss_ratio, _byte_miss_ratio = policy(capacity).process_trace(reader)
    return miss_ratio


# --- herdcache, measured ------------------------------------------------------


def resident_after_filling(herdcache, size: int, entries: int, value: bytes, options: dict) -> int:
    """How many of ``entries`` distinct keys a cache of ``size`` bytes keeps."""
    with herdcache.Cache(size=size, **options) as cache:
        for i in range(entries):
            cache.set(f"fill:{i}", value)
        return cache.stats()["entries"]


def herdcache_capacity_bytes(herdcache, entries: int, value: bytes, options: dict) -> int:
    """The smallest segment size (within 1 %) that keeps ``entries`` entries
    of ``value`` resident, found by filling real caches: the fixed costs
    (segment header, statistics slots, stripes, buckets) are measured, not
    guessed; S3-FIFO's ghost among them)."""
    low, high = 1 << 20, 1 << 20
    while resident_after_filling(herdcache, high, entries, value, options) < entries:
        low, high = high, high * 2
    while high - low > high // 100:
        middle = (low + high) // 2
        if resident_after_filling(herdcache, middle, entries, value, options) < entries:
            low = middle
        else:
            high = middle
    return high


def measured_miss_ratio(herdcache, stream, capacity_bytes: int, value: bytes, **options) -> float:
    """Replay ``stream`` against a real herdcache.Cache: get, and set on a miss."""
    misses = 0
    with herdcache.Cache(size=capacity_bytes, **options) as cache:
        get, put = cache.get, cache.set
        for key in map("key:{}".format, stream.tolist()):
            if get(key) is None:
                misses += 1
                put(key, value)
    return misses / len(stream)


class HerdcacheRunner:
    """herdcache sized for each cache fraction once, then replayed per stream."""

    def __init__(self, herdcache, keys: int, fractions, options: dict) -> None:
        self.herdcache, self.options, self.sizes = herdcache, options, {}
        for fraction in fractions:
            entries = capacity_of(keys, fraction)
            value = b"v" * max(100, SEGMENT_FLOOR // entries)
            self.sizes[fraction] = (herdcache_capacity_bytes(herdcache, entries, value, options), value)

    def miss_ratio(self, stream, fraction: float) -> float:
        size, value = self.sizes[fraction]
        return measured_miss_ratio(self.herdcache, stream, size, value, **self.options)


# --- the report -----------------------------------------------------------------


def capacity_of(keys: int, fraction: float) -> int:
    return max(1, int(keys * fraction))


def run(args, herdcaches: dict) -> list[dict]:
    """One row per (stream, fraction): every policy's and herdcache's miss ratio."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="herdcache-eviction-") as tmp:
        trace_path = os.path.join(tmp, "stream.oracleGeneral")
        for stream_name in args.streams:
            stream = make_stream(stream_name, args.keys, args.requests, args.seed)
            write_trace(stream, trace_path)
            for fraction in args.fractions:
                capacity = capacity_of(args.keys, fraction)
                row = {"stream": stream_name, "fraction": fraction}
                for name, policy in POLICIES.items():
                    row[name] = simulated_miss_ratio(policy, trace_path, capacity)
                for name, runner in herdcaches.items():
                    row[name] = runner.miss_ratio(stream, fraction)
                rows.append(row)
                print(f"  done: {stream_name} at {fraction:.0%}", flush=True)
    return rows


def report(rows: list[dict], herdcache_names: list[str]) -> None:
    columns = [*POLICIES, *herdcache_names]
    table = [
        [f"{row['stream']} @ {row['fraction']:.0%}", *(f"{row[c]:.4f}" for c in columns)]
        for row in rows
    ]
    print("\nMiss ratios (lower is better):\n")
    print(markdown_table(["stream @ cache size", *columns], table))
    for name in herdcache_names:
        print(f"\n{name}'s misses ÷ each online policy's (above 1: that policy misses less):\n")
        ratios = [
            [f"{row['stream']} @ {row['fraction']:.0%}", *(f"{row[name] / row[p]:.3f}" for p in ONLINE)]
            for row in rows
        ]
        print(markdown_table(["stream @ cache size", *ONLINE], ratios))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys (100000)")
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests per stream (1000000)")
    parser.add_argument("--streams", default=",".join(STREAMS), help=f"comma-separated, of {','.join(STREAMS)}")
    parser.add_argument("--fractions", default="0.01,0.1,0.3", help="cache sizes as shares of the keys")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--quick", action="store_true", help="10k keys, 100k requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.requests = 10_000, 100_000
    args.streams = args.streams.split(",")
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


def herdcache_runners(args) -> dict:
    """{column name: HerdcacheRunner} for each eviction policy herdcache offers."""
    try:
        herdcache = load_herdcache("get", "set", "stats", "close")
    except PeerUnavailable as exc:
        skip("herdcache", exc)
        return {}
    return {
        f"herdcache {policy}": HerdcacheRunner(herdcache, args.keys, args.fractions, {"eviction": policy})
        for policy in ("sieve", "s3fifo")
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_header("herdcache eviction benchmark", timed=False))
    print(
        f"- libcachesim {package_version('libcachesim')}; {args.keys:,} keys, "
        f"{args.requests:,} requests per stream, seed {args.seed}\n"
    )
    runners = herdcache_runners(args)
    report(run(args, runners), list(runners))


if __name__ == "__main__":
    main()
