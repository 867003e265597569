"""Cache benchmark: herdcache against the caches a Python user would reach for.

What it measures, in one run, side by side:

1. Single process, median ns per operation over several timed passes (after
   a warm-up pass) on --keys keys of ~100-byte msgpack'd dicts:
   get-hit, get-miss, and set (overwriting an existing key). Every peer
   pays msgpack: peers pack on set and unpack on get; herdcache takes and
   returns the dict and packs it itself. Peers: herdcache; a plain dict of
   msgpack'd bytes (the floor); functools.lru_cache around that dict lookup
   (see peers.LruCache: a hit returns the object unpacked the first time, so
   it measures lru_cache's own lookup, the private per-process memo; it has
   no set); diskcache.Cache on /dev/shm; redis-py to a local redis-server on
   a unix socket; pymemcache to a local memcached on a unix socket;
   multiprocessing.Manager().dict(); py-lmdb on /dev/shm; UltraDict.
2. Get-hit throughput (ops/s, all readers added up) of the peers that share
   data between processes, with 1 and then 2 forked reader processes, and
   the ratio 2 readers / 1 reader (2.0 = perfect scaling on 2 cores; a
   server peer shares those 2 cores with its server); then the same with
   one more process overwriting the same keys all along (on 2 cores the
   writer takes CPU from the readers, whatever the cache does).
3. herdcache's segment bytes per entry (cache.stats(): bytes_used / entries).
4. Snapshots and atomic writes (herdcache only): a get inside a
   ``snapshot()`` against a plain get, an atomic ``set_many`` of 10 keys
   against a plain one, and the bytes of old versions kept while a
   snapshot stays open under a write load (``snapshot_section``).
5. The per-process decoded layer (``Cache(local_items=...)``) against
   lru_cache, cachetools, cachebox, theine and herdcache without it: hot
   keys, Zipf(0.99) over --zipf-keys keys, a write-heavy mix (see
   benchmarks/local.py, which also runs alone).

Ratios: "×dict" is a peer's time over the dict+msgpack floor's, "×hc" over
herdcache's (above 1 = slower). herdcache is skipped, with the reason
printed, until herdcache.Cache exists.

Run (from the repository root, after benchmarks/install-peers.sh and
`pip install .`):

    python benchmarks/cache.py                 # full run, a few minutes
    python benchmarks/cache.py --quick         # smoke run, under a minute
    python benchmarks/cache.py --only herdcache,dict,redis --keys 50000

Numbers on a shared 2-core machine are noisy: compare ratios from one run,
not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field

import msgpack
from _common import (
    fmt_ns,
    fmt_ratio,
    machine_header,
    markdown_table,
    run_each,
    skip,
)
from _parallel import WorkerFailed, run_workers
from _timing import median, now_ns, ns_per_op
from peers import ALL_PEERS, DictMsgpack, Herdcache, Peer

import local

FLOOR = DictMsgpack.name
HERDCACHE = Herdcache.name
READER_COUNTS = (1, 2)


@dataclass
class Result:
    version: str
    get_hit: float
    get_miss: float
    set: float | None
    readers: dict[int, float] = field(default_factory=dict)  # reader count -> ops/s
    with_writer: dict[int, float] = field(default_factory=dict)  # the same, 1 writer beside
    bytes_per_entry: float | None = None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000, help="number of keys (10000)")
    parser.add_argument("--repeat", type=int, default=7, help="timed passes per number (7)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="length of one throughput run (2.0)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2000 keys, 3 passes, 0.3 s runs"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated peers: " + ",".join(p.option for p in ALL_PEERS),
    )
    local.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.repeat, args.seconds, args.zipf_keys = 2_000, 3, 0.3, 100_000
    return args


def selected_peers(only: str) -> list[type[Peer]]:
    if not only:
        return ALL_PEERS
    wanted = {name.strip().lower() for name in only.split(",") if name.strip()}
    unknown = wanted - {p.option for p in ALL_PEERS}
    if unknown:
        sys.exit(
            f"unknown peer(s) {', '.join(sorted(unknown))}; choose from "
            + ", ".join(p.option for p in ALL_PEERS)
        )
    return [p for p in ALL_PEERS if p.option in wanted]


def make_value(i: int) -> dict:
    """A dict that msgpack packs into about 100 bytes."""
    return {
        "id": i,
        "user": f"user-{i:08d}",
        "email": f"user-{i:08d}@example.org",
        "score": i / 7,
        "active": i % 3 != 0,
        "tags": ["alpha", "beta", "gamma"],
        "visits": i * 13 % 10_007,
    }


def measure(peer: Peer, keys: list[str], values: list[dict], args) -> Result:
    misses = [f"miss:{i}" for i in range(len(keys))]
    for key, value in zip(keys, values):
        peer.set(key, value)
    check_peer(peer, keys, values, misses)
    result = Result(
        version=peer.version,
        get_hit=ns_per_op(peer.get, keys, args.repeat),
        get_miss=ns_per_op(peer.get, misses, args.repeat),
        set=(
            ns_per_op(peer.set, keys, args.repeat, values)
            if getattr(peer, "supports_set", True)
            else None
        ),
    )
    if isinstance(peer, Herdcache):
        result.bytes_per_entry = peer.bytes_per_entry()
    if peer.cross_process:
        for readers in READER_COUNTS:
            for writers, into in ((0, result.readers), (1, result.with_writer)):
                into[readers] = median(
                    reader_throughput(peer, keys, values, readers, writers, args.seconds)
                    for _ in range(min(args.repeat, 3))
                )
    return result


def check_peer(peer: Peer, keys, values, misses) -> None:
    """Fail loudly if a peer does not give back what was stored."""
    for key, value in zip(keys[:100], values[:100]):
        got = peer.get(key)
        if got != value:
            raise AssertionError(f"{peer.name}: get({key!r}) returned {got!r}, not {value!r}")
    if peer.get(misses[0]) is not None:
        raise AssertionError(f"{peer.name}: get of a missing key did not return None")


def reader_throughput(peer: Peer, keys, values, readers: int, writers: int, seconds: float) -> float:
    """Total get-hit ops/s of ``readers`` forked processes reading for
    ``seconds``, while ``writers`` more processes overwrite the same keys."""

    def work(index: int, barrier) -> float:
        peer.after_fork_child()
        order = keys[index::readers] + keys[:index:readers]  # each reader starts elsewhere
        for key in order[:200]:  # warm-up: connect, fault pages in
            peer.get(key)
        barrier.wait()
        if index >= readers:
            _read_for(peer.set, list(zip(keys, values)), int(seconds * 1e9))
            return 0.0  # a writer's sets are not reads
        return _read_for(peer.get, order, int(seconds * 1e9))

    peer.before_fork()
    try:
        rates = run_workers(work, readers + writers, "process", timeout_s=seconds * 10 + 60)
    finally:
        peer.after_fork_parent()
    return sum(rates)


def _read_for(op, args: list, duration_ns: int) -> float:
    """Call op on each of args (op(*a) for a tuple a), round and round, for
    duration_ns; return calls per second."""
    batch = 100
    calls = 0
    start = now_ns()
    deadline = start + duration_ns
    keys = [a if isinstance(a, tuple) else (a,) for a in args]
    while True:
        for i in range(0, len(keys), batch):
            for key in keys[i : i + batch]:
                op(*key)
            calls += len(keys[i : i + batch])
            now = now_ns()
            if now >= deadline:
                return calls * 1e9 / (now - start)


def snapshot_section(keys: list[str], values: list[dict], repeat: int) -> None:
    """Snapshot reads and atomic batches against their plain forms, and
    the memory a long snapshot keeps (herdcache only, one process)."""
    import herdcache

    cache = herdcache.Cache(size="256MiB", max_snapshot_age=None)
    cache.set_many(dict(zip(keys, values)))
    plain_get = ns_per_op(cache.get, keys, repeat)
    with cache.snapshot() as snap:
        snap_get = ns_per_op(snap.get, keys, repeat)
    batches = [dict(zip(keys[i : i + 10], values[i : i + 10])) for i in range(0, len(keys) - 9, 10)]
    names = [str(i) for i in range(len(batches))]
    by_name = dict(zip(names, batches))
    plain_many = ns_per_op(lambda n: cache.set_many(by_name[n]), names, repeat)
    atomic_many = ns_per_op(lambda n: cache.set_many(by_name[n], atomic=True), names, repeat)
    rows = [
        ["get", fmt_ns(plain_get), "get inside a snapshot", fmt_ns(snap_get), fmt_ratio(snap_get, plain_get)],
        [
            "set_many of 10",
            fmt_ns(plain_many),
            "set_many(atomic=True) of 10",
            fmt_ns(atomic_many),
            fmt_ratio(atomic_many, plain_many),
        ],
    ]
    print("\n## Snapshots and atomic writes: median ns per call (lower is better)\n")
    print(markdown_table(["plain", "ns", "snapshot / atomic", "ns", "÷ plain"], rows))
    payload = cache.stats()["payload_bytes"]
    with cache.snapshot():
        for key, value in zip(keys, values):
            cache.set(key, value)
        kept = cache.stats()["snapshot_retained_bytes"]
    for key, value in zip(keys, values):
        cache.set(key, value)
    after = cache.stats()["snapshot_retained_bytes"]
    print(
        f"\nA snapshot open while every key is overwritten once keeps {kept:,} bytes of old "
        f"versions (payload {payload:,} bytes); once it is closed, the next pass of writes "
        f"leaves {after:,}."
    )
    cache.close()


def latency_table(results: dict[str, Result]) -> str:
    floor = results.get(FLOOR)
    herd = results.get(HERDCACHE)
    headers = ["peer"]
    for op in ("get-hit", "get-miss", "set"):
        headers += [f"{op} ns", "×dict", "×hc"]
    rows = []
    for name, r in results.items():
        row = [name]
        for op in ("get_hit", "get_miss", "set"):
            ns = getattr(r, op)
            row += [
                fmt_ns(ns),
                fmt_ratio(ns, floor and getattr(floor, op)),
                fmt_ratio(ns, herd and getattr(herd, op)),
            ]
        rows.append(row)
    return markdown_table(headers, rows)


def throughput_table(results: dict[str, Result]) -> str:
    herd = results.get(HERDCACHE)
    herd_two = herd.readers.get(2) if herd else None
    rows = []
    for name, r in results.items():
        if not r.readers:
            continue
        one, two = r.readers[1], r.readers[2]
        rows.append(
            [name, f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}",
             fmt_ratio(herd_two, two) if herd_two else "—",
             f"{r.with_writer[1]:,.0f}", f"{r.with_writer[2]:,.0f}"]
        )  # fmt: skip
    headers = ["peer", "1 reader ops/s", "2 readers ops/s", "2/1", "hc ÷ peer (2 readers)",
               "1 reader + 1 writer", "2 readers + 1 writer"]  # fmt: skip
    return markdown_table(headers, rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_header("herdcache cache benchmark"))
    keys = [f"key:{i}" for i in range(args.keys)]
    random.Random(42).shuffle(keys)
    values = [make_value(int(k.split(":")[1])) for k in keys]
    sizes = [len(msgpack.packb(v)) for v in values]
    print(
        f"- {args.keys} keys, values of {min(sizes)}–{max(sizes)} bytes msgpack'd, "
        f"{args.repeat} timed passes per number, throughput runs of {args.seconds} s\n"
    )

    def run(peer: Peer) -> Result | None:
        print(f"- running {peer.name} ({peer.version})", flush=True)
        try:
            return measure(peer, keys, values, args)
        except WorkerFailed as exc:
            skip(peer.name, exc)
            return None

    measured = run_each(selected_peers(args.only), run)
    results = {name: result for name, result in measured.items() if result is not None}

    print("\n## Single process: median ns per operation (lower is better)\n")
    print(latency_table(results))
    print(
        "\n×dict: time over dict+msgpack's; ×hc: time over herdcache's. "
        "functools.lru_cache has no set; its hit returns the already unpacked object."
    )
    print("\n## Get-hit throughput with forked reader processes (higher is better)\n")
    print(throughput_table(results))
    print(
        "\n2/1: two readers' total over one reader's (2.00 = perfect scaling). "
        "hc ÷ peer: herdcache's 2-reader throughput over the peer's."
    )
    herd = results.get(HERDCACHE)
    if herd is not None:
        print(
            f"\nherdcache segment bytes per entry: {herd.bytes_per_entry:,.0f} "
            f"(values of ~{median(sizes):.0f} bytes msgpack'd)"
        )
    if not args.only or "herdcache" in args.only:
        snapshot_section(keys, values, args.repeat)
        local.section(args)


if __name__ == "__main__":
    main()
