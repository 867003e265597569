"""The bodies of the cache tests' child processes.

They live in a module of their own so that spawned children can import
them by name.  Each takes a :class:`~cache_helpers.CacheRef` and reports
through a pipe or queue; none sleeps to wait for another process.
"""

from __future__ import annotations

import math
import threading
import random
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from cache_helpers import CacheRef, checked_value, verify_value

from herdcache.serializers import TAG_RAW

# -- basic sharing -------------------------------------------------------------


def read_then_write(ref: CacheRef, conn: Connection) -> None:
    """Report what the parent stored, then store a value for the parent."""
    cache = ref.open()
    conn.send(cache.get("from-parent"))
    cache["from-child"] = {"pid-known": True, "tuple": (1, 2)}
    conn.send("stored")


def ttl_child(ref: CacheRef, conn: Connection) -> None:
    """Report the ttl the parent gave a key; store one that expires soon;
    on request, make the parent's key permanent."""
    cache = ref.open()
    conn.send(cache.ttl("timed"))
    cache.set("short", "soon gone", ttl=0.05)
    conn.send("stored")
    assert conn.recv() == "touch"
    conn.send(cache.touch("timed", math.inf))


def disjoint_and_shared(ref: CacheRef, index: int, nprocs: int, rounds: int, barrier: Any, conn: Connection) -> None:
    """Write keys of its own and keys every process writes; check every
    shared value read is one some process wrote; report the own keys it
    deleted."""
    cache = ref.open()
    barrier.wait()
    deleted = []
    for j in range(rounds):
        cache[f"p{index}-{j}"] = (index, j)
        cache[f"s{j % 50}"] = (index, j)
        seen = cache.get(f"s{(j * 7) % 50}")
        if seen is not None:
            writer, seq = seen
            assert 0 <= writer < nprocs and seq % 50 == (j * 7) % 50, seen
        if j % 10 == 9:
            assert cache.delete(f"p{index}-{j - 1}")
            deleted.append(j - 1)
    conn.send(deleted)


def incr_many(ref: CacheRef, times: int, barrier: Any) -> None:
    """Increment the shared counter ``times`` times."""
    cache = ref.open()
    barrier.wait()
    for _ in range(times):
        cache.incr("counter")


# -- self-checking values ------------------------------------------------------------


def log_size(rng: random.Random, smallest: int, largest: int) -> int:
    """A size between smallest and largest, as many small ones as large."""
    return int(math.exp(rng.uniform(math.log(smallest), math.log(largest))))


def checked_writer(
    ref: CacheRef, keys: list[bytes], seed: int, largest: int, stop: Any, started: Any, deletes: float = 0.1
) -> None:
    """Set, replace and add self-checking values of varied sizes on
    ``keys``, and delete (a ``deletes`` fraction of the operations), until
    ``stop`` is set."""
    cache = ref.open()
    rng = random.Random(seed)
    writes = (cache.set,) * 15 + (cache.replace,) * 2 + (cache.add,)
    seq = seed << 40
    started.set()
    while not stop.is_set():
        for _ in range(100):
            key = rng.choice(keys)
            seq += 1
            if rng.random() < deletes:
                cache.delete(key)
            else:
                rng.choice(writes)(key, checked_value(key, seq, log_size(rng, 16, largest), rng))


def checked_reader(
    ref: CacheRef, keys: list[bytes], reads: int, seconds: float, use_lookup: bool, results: Any
) -> None:
    """Read ``keys`` round and round (``reads`` times, or for ``seconds`` if
    that is > 0) with get() or lookup(), verify every value, and report
    (reads, hits, bad reads, a few bad values)."""
    try:
        cache = ref.open()
        done = hits = 0
        bad: list[Any] = []
        deadline = time.monotonic() + seconds
        while (done < reads) if seconds <= 0 else (time.monotonic() < deadline):
            for key in keys:
                if use_lookup:
                    found = cache._lookup(key)
                    value = None if found is None else found[0]
                    if found is not None and found[1] != TAG_RAW:
                        bad.append((key, "format", found[1]))
                else:
                    value = cache.get(key)
                if value is not None:
                    hits += 1
                    if not verify_value(key, value):
                        bad.append((key, len(value), value[:16]))
            done += len(keys)
        results.put((done, hits, len(bad), bad[:5]))
    except BaseException:
        results.put((0, 0, -1, [traceback.format_exc()]))
        raise


# -- the kill loop -------------------------------------------------------------------------


def value_pool(keys: list[bytes], per_key: int, largest: int, seed: int) -> dict[bytes, list[bytes]]:
    """Self-checking values for each key, made before the writer starts so
    that it spends its time inside the cache, not making values."""
    rng = random.Random(seed)
    return {
        key: [checked_value(key, seq, log_size(rng, 16, largest), rng) for seq in range(per_key)] for key in keys
    }


def doomed_writer(ref: CacheRef, pool: dict[bytes, list[bytes]], seed: int, conn: Connection) -> None:
    """Write values from ``pool`` as fast as it can, forever: say "started"
    after the first write, then wait for SIGKILL inside some operation."""
    cache = ref.open()
    rng = random.Random(seed)
    keys = list(pool)
    ops = (cache.set, cache.set, cache.set, cache.replace, cache.add)
    first = True
    while True:
        for key in rng.sample(keys, len(keys)):
            value = rng.choice(pool[key])
            if rng.random() < 0.15:
                cache.delete(key)
            else:
                rng.choice(ops)(key, value)
            if first:
                conn.send("started")
                first = False


def looping_reader(ref: CacheRef, keys: list[bytes], passes: Any, stop: Any, results: Any) -> None:
    """Read and verify every key, pass after pass, counting passes in
    ``passes``, until ``stop`` is set; report (reads, hits, bad, examples)."""
    try:
        cache = ref.open()
        reads = hits = 0
        bad: list[Any] = []
        while not stop.is_set():
            for key in keys:
                value = cache.get(key)
                reads += 1
                if value is not None:
                    hits += 1
                    if not verify_value(key, value):
                        bad.append((key, len(value), value[:16]))
            passes.value += 1
        results.put((reads, hits, len(bad), bad[:5]))
    except BaseException:
        results.put((0, 0, -1, [traceback.format_exc()]))
        raise


# -- a corrupted table --------------------------------------------------------------------


def corrupt(region: memoryview, mode: str, rng: random.Random) -> None:
    """Damage ``region`` in one of several ways (see CORRUPTIONS)."""
    size = len(region)
    if mode == "scatter":  # random bytes anywhere
        for _ in range(4000):
            region[rng.randrange(size)] = rng.randrange(256)
    elif mode == "flip":  # single bits anywhere: plausible-looking damage
        for _ in range(4000):
            pos = rng.randrange(size)
            region[pos] ^= 1 << rng.randrange(8)
    elif mode == "front":  # 5% of the bytes of the first 512 KiB: header,
        front = min(size, 512 << 10)  # statistics, stripes, buckets, maps
        for _ in range(front // 20):
            region[rng.randrange(front)] = rng.randrange(256)
    elif mode in ("headers", "queue"):  # a field of many item headers (found
        data = bytes(region)  # by their keys); "queue": only the SIEVE
        start = data.find(b"key-")  # queue links, which lookups never follow
        while start != -1:
            if rng.random() < 0.3 and start >= 48:
                field = start - 48 + 4 * (rng.randrange(8, 10) if mode == "queue" else rng.randrange(12))
                region[field : field + 4] = rng.randbytes(4)
            start = data.find(b"key-", start + 4)
    elif mode in ("runs", "zeros"):  # whole runs of 4 KiB
        for _ in range(16):
            start = rng.randrange(size - 4096)
            region[start : start + 4096] = rng.randbytes(4096) if mode == "runs" else bytes(4096)
    else:
        raise ValueError(mode)


#: The ways corrupt() damages a table.
CORRUPTIONS = ("scatter", "flip", "front", "headers", "queue", "runs", "zeros")


def corrupt_and_use(name: str, mode: str, seed: int) -> None:
    """Corrupt the named cache's table, then use it every way there is.

    Only herdcache's own errors may come out (anything else propagates and
    makes the exit code 1; a crash makes it a signal).  Prints, as JSON,
    the errors seen and whether clear() left a table that passes check().
    """
    import json

    from herdcache import Cache, HerdcacheError

    rng = random.Random(seed)
    cache = Cache(name, serializer="raw")
    info = next(entry for entry in cache.segment.structs() if entry.name == "cache")
    with memoryview(cache.segment) as whole, whole[info.offset : info.offset + info.size] as region:
        corrupt(region, mode, rng)
    seen: dict[str, int] = {}

    def attempt(operation: Any, *args: Any) -> None:
        try:
            operation(*args)
        except HerdcacheError as exc:
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1

    keys = [b"key-%d" % i for i in range(400)]

    def read() -> None:
        for key in keys:
            attempt(cache.get, key)
            attempt(cache._lookup, key)
        attempt(len, cache)
        attempt(list, cache)
        attempt(cache.stats)

    def write() -> None:
        for i, key in enumerate(keys):
            attempt(cache.set, key, b"new value %d" % i * (i % 50))
            attempt(cache.add, b"added-%d" % i, b"x" * (i * 37 % 3000))
            if i % 3 == 0:
                attempt(cache.delete, key)
            if i % 5 == 0:
                attempt(cache.touch, key, 100)

    # The first operation to meet the damage may repair the whole stripe,
    # so half the seeds write first, before any read could.
    steps = [read, write] if seed % 2 else [write, read]
    for step in steps + steps:
        step()
    attempt(cache.check)
    attempt(lambda: Cache(name, serializer="raw").close())
    cache.clear()
    cache.check()  # clear() is the way back to a sound table
    cache["after"] = b"clear"
    assert cache["after"] == b"clear"
    print(json.dumps({"errors": seen}))


# -- a Cache passed by pickling (spawn, forkserver, pool initializers) -----------


def echo_through_cache(cache: Any, conn: Connection) -> None:
    """Got ``cache`` by pickle: report what the parent stored and how the
    cache was opened, then store a value for the parent."""
    conn.send((cache.get("from-parent"), cache.name, cache.default_ttl, cache._serializer.name))
    cache.set("from-child", {"tuple": (1, 2)})
    cache.close()
    conn.send("stored")


_pool_cache: Any = None


def init_pool_worker(cache: Any) -> None:
    """A ProcessPoolExecutor initializer: keep the cache for the tasks."""
    global _pool_cache
    _pool_cache = cache


def square_once(n: int) -> int:
    """A pool task: the square of n, computed once for the whole pool."""
    return _pool_cache.get_or_compute(f"square:{n}", lambda: n * n)


def read_then_block(cache: Any, hits: int, conn: Connection) -> None:
    """Hit the cache ``hits`` times, say so, then block until killed."""
    for _ in range(hits):
        cache.get("k")
    conn.send("counted")
    threading.Event().wait()
