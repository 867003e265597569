"""Tier benchmark: herdcache's TieredCache (one shared L1 per host in front of
Redis) against what a many-host Python user would use instead.

What it measures, in one run, side by side, against one local redis-server
(started by the benchmark: unix socket and 127.0.0.1, no persistence):

1. Hit latency, one process, median ns per get of a ~100-byte dict (a
   msgpack'd dict for the Redis peers, unpacked on every get): herdcache
   TieredCache L1 hit, as it comes and with its per-process decoded layer
   (``local_items=1000``, opt-in: the same object on every hit, checked
   against the L1 in O(1)); redis-py GET over the unix socket and over TCP
   loopback; redis-py's client-side caching (RESP3, CacheConfig), which
   needs Redis >= 7.4: if the server is older the row says so.
2. Redis commands per 1,000 requests, and the server's tracking table, with
   3 simulated hosts x 8 processes (each host its own L1 segment) on a
   Zipf(0.99) stream over --keys keys: reads through the cache (the peers:
   get, and on a miss set; herdcache: get_or_compute), with no writes and
   with 1 % writes (set).  Peers: plain redis-py; a per-process TTL cache
   (a dict with expiry, ttl = local_ttl) in front of redis-py; redis-py
   client-side caching where the server allows it; herdcache.
   "lookups/host" counts, in the clients, the round trips that look a key
   up in Redis (a GET; herdcache's read-or-lock script or fetch), per host,
   in a cold pass (every cache empty) and a warm pass (the next requests
   of each process's stream), against the floors for these streams: a
   cache with one copy per host looks up each key new to the host once, a
   cache per process each key new to the process.  "GETs/host" is the
   server's count of GETs (values sent) over both passes.  "L1 events":
   herdcache's flushes, suspensions and resumes in each pass (summed over
   the hosts), which explain a warm pass's lookups: a flush (tracking
   lost) makes a host read everything again, a suspension (a late PING)
   only what it reads until the reply.
3. Invalidation delay: host A sets a key that host B holds in its L1; the
   time from A's set returning until B's L1 no longer has the old value,
   median and p90 over --writes writes.
4. Herd across hosts: 3 hosts x 8 processes want one missing key whose
   computation takes 100 ms, released together: computations, the time
   from the release to the last caller holding the value, and where it
   goes (until the computation began; from its end to the last caller of
   the computing host, and of the other hosts), herdcache vs
   dogpile.cache's redis backend with distributed_lock (which polls the
   lock every 0.1 s).

Run (from the repository root, after `pip install '.[redis]' dogpile.cache`
and `apt-get install redis-server`):

    python benchmarks/tier.py            # about a minute
    python benchmarks/tier.py --quick    # smoke run

Numbers on a shared 2-core machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from contextlib import ExitStack

import msgpack
import redis
from _common import (
    fmt_ns,
    fmt_ratio,
    machine_header,
    markdown_table,
    package_version,
    skip,
)
from _timing import median, now_ns, ns_per_op, percentile
from servers import RedisServer, ServerUnavailable

import herdcache

FORK = multiprocessing.get_context("fork")
HOSTS, PER_HOST = 3, 8
LOCAL_TTL = 30.0
WRITE_FRACTIONS = (0.0, 0.01)
VALUE = {"id": 1, "name": "a user called Ada", "roles": ["admin", "dev"], "score": 3.25, "tags": list(range(8))}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000, help="keys of the Zipf stream (1000)")
    parser.add_argument("--requests", type=int, default=5_000, help="requests per process (5000)")
    parser.add_argument("--writes", type=int, default=200, help="writes timed for the invalidation delay (200)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per latency (5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.requests, args.writes, args.repeat = 1_000, 1_000, 50, 3
    return args


# -- the peers of part 2, each one process's client -------------------------------


class PlainRedis:
    name = "redis-py GET/SET"

    def __init__(self, url: str, segdir: str, host: str):
        self.client = redis.Redis.from_url(url)
        self.lookups = 0  # round trips that looked a key up in Redis

    def get(self, key: str):
        self.lookups += 1
        data = self.client.get(key)
        return None if data is None else msgpack.unpackb(data)

    def set(self, key: str, value) -> None:
        self.client.set(key, msgpack.packb(value), ex=600)

    def read_through(self, key: str):
        """Cache-aside: get; on a miss, compute and set."""
        value = self.get(key)
        if value is None:
            value = VALUE
            self.set(key, value)
        return value


class TTLFront(PlainRedis):
    """A private dict with expiry in front of redis-py: what a process keeps
    by itself (no invalidation: a value may be stale for the whole ttl)."""

    name = "per-process TTL dict + redis-py"

    def __init__(self, url: str, segdir: str, host: str):
        super().__init__(url, segdir, host)
        self.local: dict = {}

    def get(self, key: str):
        hit = self.local.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        value = super().get(key)
        if value is not None:
            self.local[key] = (value, time.monotonic() + LOCAL_TTL)
        return value

    def set(self, key: str, value) -> None:
        super().set(key, value)
        self.local[key] = (value, time.monotonic() + LOCAL_TTL)


class RedisPyCSC(PlainRedis):
    name = "redis-py client-side caching"

    def __init__(self, url: str, segdir: str, host: str):
        from redis.cache import CacheConfig

        self.client = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())


class Tier:
    name = "herdcache TieredCache"

    def __init__(self, url: str, segdir: str, host: str, **options):
        remote = redis.Redis.from_url(url, protocol=3)
        self.cache = herdcache.TieredCache(
            host, "64MiB", remote=remote, prefix="bench:", dir=segdir, local_ttl=LOCAL_TTL, **options
        )
        deadline = time.monotonic() + 10
        while not self.cache.tracking and time.monotonic() < deadline:
            time.sleep(0.001)
        self.get, self.set = self.cache.get, self._set
        self.lookups = 0
        remote = self.cache._remote  # count its lookups: read_or_lock (get_or_compute), fetch (get)
        for name in ("read_or_lock_op", "fetch_many_op"):
            setattr(remote, name, self._counted(getattr(remote, name)))

    def _counted(self, op):
        def counted(*args):
            self.lookups += 1
            return op(*args)

        return counted

    def _set(self, key: str, value) -> None:
        self.cache.set(key, value, ttl=600)

    def read_through(self, key: str):
        """herdcache's own read-through: one computation per key in the fleet."""
        return self.cache.get_or_compute(key, lambda: VALUE, ttl=600)


def csc_unavailable(client: redis.Redis) -> str | None:
    """Why redis-py's client-side caching cannot run here, or None."""
    version = client.info("server")["redis_version"]
    if tuple(int(x) for x in version.split(".")[:2]) < (7, 4):
        return f"server is Redis {version}; redis-py's client-side caching needs 7.4 or later"
    try:
        from redis.cache import CacheConfig  # noqa: F401
    except ImportError:
        return f"redis-py {redis.__version__} has no client-side caching"
    return None


def remove_hosts(name: str, segdir: str) -> None:
    """Remove the L1 segments of the simulated hosts ``name0``, ``name1``..."""
    for h in range(HOSTS):
        try:
            herdcache.remove(f"{name}{h}", dir=segdir)
        except herdcache.errors.SegmentNotFound:
            pass


# -- part 1: hit latency ------------------------------------------------------------


def hit_latency(server: RedisServer, segdir: str, repeat: int) -> list[list]:
    keys = [f"hit:{i}" for i in range(1000)]
    rows: list[list] = []
    base = 0.0
    # The L1 as it comes, then with its per-process decoded layer (opt-in).
    for label, options in (("L1 hit", {}), ("L1 hit, local_items=1000", {"local_items": 1000})):
        tier = Tier(server.url(), segdir, f"latency{len(rows)}", **options)
        for k in keys:
            tier.set(k, VALUE)
        for k in keys:
            tier.get(k)  # into the L1 (and the decoded layer)
        ns = ns_per_op(tier.get, keys, repeat)
        base = base or ns
        rows.append([f"{Tier.name} ({label})", fmt_ns(ns), fmt_ratio(ns, base)])
        tier.cache.close()
    plain = redis.Redis.from_url(server.url())
    for k in keys:
        plain.set(k, msgpack.packb(VALUE))
    clients = {"redis-py GET, unix socket": plain, "redis-py GET, TCP loopback": redis.Redis(port=server.port)}
    reason = csc_unavailable(plain)
    if reason is None:
        from redis.cache import CacheConfig

        clients["redis-py client-side caching"] = redis.Redis.from_url(server.url(), protocol=3, cache_config=CacheConfig())
    for name, client in clients.items():
        ns = ns_per_op(lambda k, c=client: msgpack.unpackb(c.get(k)), keys, repeat)
        rows.append([name, fmt_ns(ns), fmt_ratio(ns, base)])
    if reason is not None:
        rows.append(["redis-py client-side caching", "—", reason])
    return rows


# -- part 2: commands per 1,000 requests -----------------------------------------------


def zipf_stream(keys: int, n: int, seed: int) -> list[int]:
    weights = [1.0 / (i + 1) ** 0.99 for i in range(keys)]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    rng = random.Random(seed)
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(n)]


def _streams(keys: int, requests: int, host: int) -> list[list[int]]:
    """The Zipf streams of one host's processes: two passes each (cold, warm)."""
    return [zipf_stream(keys, 2 * requests, 100 * host + p) for p in range(PER_HOST)]


def _client_run(peer_class, url, segdir, host, stream, writes, seed, barrier, lookups) -> None:
    peer = peer_class(url, segdir, f"zipf{host}")
    rng = random.Random(seed + 1)
    half = len(stream) // 2
    barrier.wait()
    for n, i in enumerate(stream):
        if n == half:  # between the passes: the parent reads the counts
            with lookups.get_lock():
                lookups[2 * host] += peer.lookups
            peer.lookups = 0
            barrier.wait()
            barrier.wait()
        key = f"z:{i}"
        if rng.random() < writes:
            peer.set(key, VALUE)
        else:
            peer.read_through(key)
    barrier.wait()  # the warm pass is done everywhere (the parent reads the L1 events)
    barrier.wait()  # before any exit: a tracker's exit starts a new one, which flushes
    with lookups.get_lock():
        lookups[2 * host + 1] += peer.lookups
    os._exit(0)


def read_floor(keys: int, requests: int) -> tuple[float, float]:
    """The fewest lookups (no writes, no expiry) a cache with one copy per
    host can send to Redis, over what a cache per process must, in the cold
    and in the warm pass: keys new to the host, over the sum of keys new to
    each process.  Above 1/8 whenever the processes do not all read the
    same keys."""
    host_new = [0, 0]
    process_new = [0, 0]
    for host in range(HOSTS):
        streams = _streams(keys, requests, host)
        cold = [set(stream[:requests]) for stream in streams]
        warm = [set(stream[requests:]) - c for stream, c in zip(streams, cold)]
        host_cold = set().union(*cold)
        host_new[0] += len(host_cold)
        host_new[1] += len(set().union(*warm) - host_cold)
        process_new[0] += sum(map(len, cold))
        process_new[1] += sum(map(len, warm))
    return host_new[0] / process_new[0], host_new[1] / process_new[1]


def commands(server: RedisServer, segdir: str, args) -> list[list]:
    client = redis.Redis.from_url(server.url())
    rows = []
    for writes in WRITE_FRACTIONS:
        per_process = None
        for peer_class in (PlainRedis, TTLFront, RedisPyCSC, Tier):
            name = f"{peer_class.name}, {writes:.0%} writes"
            reason = csc_unavailable(client) if peer_class is RedisPyCSC else None
            if reason is not None:
                rows.append([name, "—", "—", "—", "—", "—", "—", "—", reason])
                continue
            cells, lookups = _one_workload(client, server, segdir, peer_class, writes, args)
            if peer_class is TTLFront:
                per_process = lookups
            ratios = [fmt_ratio(n, p) if per_process else "—" for n, p in zip(lookups, per_process or lookups)]
            rows.append([name, *cells[:-1], *ratios, cells[-1]])
    return rows


def tier_events(segdir: str) -> list[int]:
    """[flushes, suspensions, resumes] of the hosts' L1s so far, summed
    (a flush moves the epoch; see _tracking, "Suspension")."""
    totals = [0, 0, 0]
    for h in range(HOSTS):
        l1 = herdcache.Cache(f"zipf{h}", "64MiB", dir=segdir)  # attached: no tracker of its own
        for i, name in enumerate(("tier.epoch", "tier.suspensions", "tier.resumes")):
            totals[i] += l1.segment.counter(name).load()
        l1.close()
    return totals


def events_cell(marks: list[list[int]]) -> str:
    """'cold; warm' flushes/suspensions/resumes between the three marks."""
    passes = [[b - a for a, b in zip(before, after)] for before, after in zip(marks, marks[1:])]
    return "; ".join("%d/%d/%d" % tuple(p) for p in passes)


def _one_workload(client, server, segdir, peer_class, writes, args) -> tuple[list[str], list[float]]:
    """Run 3x8 processes of one peer over two passes; its row's cells, and
    its lookups per host in each pass."""
    total_requests = HOSTS * PER_HOST * args.requests * 2
    client.flushall()
    client.config_resetstat()
    barrier = FORK.Barrier(HOSTS * PER_HOST + 1)
    lookups = FORK.Array("q", 2 * HOSTS)
    procs = [
        FORK.Process(
            target=_client_run, args=(peer_class, server.url(), segdir, h, stream, writes, 100 * h + p, barrier, lookups)
        )
        for h in range(HOSTS)
        for p, stream in enumerate(_streams(args.keys, args.requests, h))
    ]
    for p in procs:
        p.start()
    barrier.wait()  # every client connected (and every tracker live): the server's tracking now
    tracking = client.info("stats")
    marks = [tier_events(segdir)] if peer_class is Tier else []
    barrier.wait()  # the cold pass is done
    if marks:
        marks.append(tier_events(segdir))
    barrier.wait()
    barrier.wait()  # the warm pass is done
    if marks:
        marks.append(tier_events(segdir))
    barrier.wait()
    for p in procs:
        p.join()
    calls = {k[len("cmdstat_") :]: v["calls"] for k, v in client.info("commandstats").items()}
    overhead = ("config|resetstat", "info", "hello", "client|tracking", "ping", "flushall", "script|load")
    useful = sum(v for k, v in calls.items() if k not in overhead)
    remove_hosts("zipf", segdir)
    per_host = [sum(lookups[2 * h + i] for h in range(HOSTS)) / HOSTS for i in (0, 1)]
    return [
        f"{1000 * useful / total_requests:.1f}",
        f"{calls.get('get', 0) / HOSTS:,.0f}",
        f"{per_host[0]:,.0f}",
        f"{per_host[1]:,.0f}",
        f"{tracking.get('tracking_total_keys', 0)} keys, {tracking.get('tracking_total_prefixes', 0)} prefixes",
        events_cell(marks) if marks else "—",
    ], per_host


# -- part 3: invalidation delay -------------------------------------------------------


def invalidation_delay(server: RedisServer, segdir: str, writes: int) -> list[list]:
    a = Tier(server.url(), segdir, "inval-a").cache
    b = Tier(server.url(), segdir, "inval-b").cache
    reader, writer = FORK.Pipe()
    child = FORK.Process(target=_watch, args=(server.url(), segdir, writes, writer))
    child.start()
    b.close()  # the child process is host B's watcher now
    assert reader.recv() == "ready"
    delays = []
    for i in range(writes):
        assert reader.recv() == "holding"  # B has key i's old value in its L1
        a.set("inval", i, ttl=600)
        reader.send(now_ns())
        delays.append(reader.recv())
    child.join()
    a.close()
    ms = [d / 1e6 for d in delays]
    return [["set on A until B's L1 drops the old value", f"{median(ms):.3f}", f"{percentile(ms, 0.9):.3f}", f"{max(ms):.3f}"]]


def _watch(url: str, segdir: str, writes: int, conn) -> None:
    b = Tier(url, segdir, "inval-b").cache
    conn.send("ready")
    for i in range(writes):
        while b.get("inval") != (i - 1 if i else None):
            pass
        conn.send("holding")
        written = conn.recv()
        while b._lookup("inval") is not None and b.get("inval") == (i - 1 if i else None):
            pass
        conn.send(now_ns() - written)
    os._exit(0)


# -- part 4: herd across hosts --------------------------------------------------------------


COMPUTE_S = 0.1


def _herd_caller(kind, url, segdir, host, key, counter, barrier, finished) -> None:
    if kind == "herdcache":
        cache = Tier(url, segdir, host).cache
        fetch = lambda fn: cache.get_or_compute(key, fn, ttl=600)
    else:
        import dogpile.cache

        region = dogpile.cache.make_region().configure(
            "dogpile.cache.redis",
            expiration_time=600,
            arguments={"url": url, "distributed_lock": True, "thread_local_lock": False, "lock_timeout": 30},
        )
        fetch = lambda fn: region.get_or_create(key, fn)

    def compute():
        with counter.get_lock():
            counter.value += 1
        finished.put(("began", host, now_ns()))
        time.sleep(COMPUTE_S)  # the computation's own time, not synchronisation
        finished.put(("ended", host, now_ns()))
        return VALUE

    barrier.wait()
    finished.put(("released", host, now_ns()))
    assert fetch(compute) == VALUE
    finished.put(("got", host, now_ns()))
    os._exit(0)


def _herd_trial(kind, server, segdir, trial) -> tuple[int, float, float, float, float]:
    """One herd: computations; ms from the release to the last caller; to
    the start of the (first) computation; from its end to the last caller
    of the computing host, and of the other hosts."""
    key = f"herd:{kind}:{trial}:{time.time_ns()}"
    counter = FORK.Value("i", 0)
    barrier = FORK.Barrier(HOSTS * PER_HOST + 1)
    finished = FORK.SimpleQueue()  # written at once: callers leave by os._exit
    procs = [
        FORK.Process(target=_herd_caller, args=(kind, server.url(), segdir, f"herd{h}", key, counter, barrier, finished))
        for h in range(HOSTS)
        for _ in range(PER_HOST)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    events: list[tuple[str, str, int]] = []
    while sum(1 for e in events if e[0] == "got") < len(procs):
        events.append(finished.get())
    for p in procs:
        p.join()
    # The release: the first caller past the barrier (this process may be
    # scheduled well after them on a loaded machine).
    released = min(t for what, _, t in events if what == "released")
    began = min(t for what, _, t in events if what == "began")
    ended, computer = min((t, h) for what, h, t in events if what == "ended")
    got = [(h, t) for what, h, t in events if what == "got"]
    own = max(t for h, t in got if h == computer)
    others = max(t for h, t in got if h != computer)
    ms = lambda a, b: (a - b) / 1e6  # noqa: E731
    return counter.value, ms(max(t for _, t in got), released), ms(began, released), ms(own, ended), ms(others, ended)


def herd(server: RedisServer, segdir: str, trials: int) -> list[list]:
    rows = []
    for kind, name in (("herdcache", Tier.name), ("dogpile", "dogpile.cache redis lock")):
        if kind == "dogpile" and package_version("dogpile.cache") == "not installed":
            rows.append([name, "—", "—", "—", "—", "dogpile.cache is not installed (pip install dogpile.cache)"])
            continue
        results = [_herd_trial(kind, server, segdir, trial) for trial in range(trials)]
        computations = [r[0] for r in results]
        last, began, own, others = ([r[i] for r in results] for i in range(1, 5))
        rows.append([
            name, f"{median(computations):.0f} (max {max(computations)})", f"{median(last):.1f}",
            f"{median(began):.1f}", f"{median(own):.1f} / {median(others):.1f}", "",
        ])
    remove_hosts("herd", segdir)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_header("herdcache tier benchmark"))
    print(f"- redis-py {redis.__version__}, dogpile.cache {package_version('dogpile.cache')}")
    print(f"- {HOSTS} simulated hosts x {PER_HOST} processes; local_ttl {LOCAL_TTL} s\n")
    with ExitStack() as stack:
        try:
            server = stack.enter_context(RedisServer())
        except ServerUnavailable as exc:
            skip("every part", exc)
            return
        segdir = tempfile.mkdtemp(prefix="hc-bench-tier-", dir="/dev/shm")
        stack.callback(shutil.rmtree, segdir, True)
        print(f"- server: Redis {redis.Redis.from_url(server.url()).info('server')['redis_version']}\n")

        print("## Hit latency (ns per get, one process)\n")
        print(markdown_table(["peer", "ns/get", "×L1"], hit_latency(server, segdir, args.repeat)))
        print(f"\n## Redis commands and reads ({HOSTS}x{PER_HOST} processes, Zipf(0.99), {args.keys} keys)\n")
        print(
            f"Each process makes two passes of {args.requests:,} requests: cold (every cache starts empty) "
            f"and warm (the next {args.requests:,} of its stream). Lookups: round trips that look a key "
            f"up in Redis (a GET; herdcache's read-or-lock script), per host in each pass; ÷ TTL dict is "
            f"that over the per-process TTL dict's. GETs (values sent, both passes) per host from the "
            f"server's counts. The floors of the ratio for these streams without writes (one lookup "
            f"per key per host, over one per key per process): cold %.3f, warm %.3f. L1 events: "
            f"herdcache's flushes (the whole L1 expired: tracking started or lost) / suspensions "
            f"(a late PING: no copy served meanwhile) / of those, resumed without a flush, summed "
            f"over the hosts, in the cold; warm pass: a flush makes the host read everything "
            f"again.\n" % read_floor(args.keys, args.requests)
        )
        headers = ["peer", "commands/1000 req", "GETs/host", "lookups/host cold", "lookups/host warm",
                   "tracking table", "÷ TTL dict cold", "÷ TTL dict warm", "L1 events cold; warm"]
        print(markdown_table(headers, commands(server, segdir, args)))
        print(f"\n## Invalidation delay ({args.writes} writes, ms)\n")
        print(markdown_table(["what", "median", "p90", "max"], invalidation_delay(server, segdir, args.writes)))
        print(f"\n## Herd across hosts ({HOSTS}x{PER_HOST} processes, compute {COMPUTE_S * 1000:.0f} ms)\n")
        trials = 2 if args.quick else 5
        print(
            "Medians of the trials, ms: from the release to the last caller; to the start of the "
            "computation; from its end to the last caller of the computing host / of the other hosts.\n"
        )
        headers = ["peer", "computations", "last caller", "compute began", "after compute: own / other hosts", "note"]
        print(markdown_table(headers, herd(server, segdir, trials)))


if __name__ == "__main__":
    main()
