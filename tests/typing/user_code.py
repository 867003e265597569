"""A user's program calling every public method of herdcache, for
``mypy --strict`` (run by .ci/run): the package's types, _core.pyi
included, must serve code written against the documented API.  It also
runs (``python tests/typing/user_code.py``) in a private directory."""

from __future__ import annotations

import asyncio
import queue
import sys
import tempfile

import herdcache
from herdcache import FOREVER, Cache, Condition, Counter, Lock, Queue, Segment, StructInfo, errors


def segments(dir: str) -> None:
    seg: Segment = Segment.create("user", "4MiB", dir=dir)
    again: Segment = Segment.attach("user", dir=dir, allow_shared=False, timeout=1.0)
    opened: Segment = Segment.open("user", "4MiB", dir=dir, mode=0o600)
    with Segment.anonymous("1MiB") as anon:
        assert anon.path is None and anon.name is None
    view, found = seg.struct("blob", 4096)
    view[0] = 1 if not found else view[0]
    view.release()
    with memoryview(seg) as whole:
        assert len(whole) == seg.size
    infos: list[StructInfo] = seg.structs()
    names: list[str] = seg.names()
    assert len(infos) == len(names) and "blob" in names
    info = seg.info()
    seed: bytes = seg.hash_seed
    assert info["size"] == seg.size and len(seed) == 16 and seg.created and not seg.closed
    assert seg.path is not None and seg.dir == dir and seg.name == "user"
    assert "user" in herdcache.list_segments(dir) and not herdcache.is_orphan("user", dir=dir)
    again.close()
    opened.close()
    primitives(seg)
    seg.close()
    seg.unlink()
    assert herdcache.gc(dir) == []
    Segment.create("gone", "1MiB", dir=dir).close()
    herdcache.remove("gone", dir=dir)


def primitives(seg: Segment) -> None:
    counter: Counter = seg.counter("hits")
    total: int = counter.add(2) + counter.load() + counter.exchange(5) + int(counter)
    counter.store(total)
    assert counter.compare_exchange(total, 0)
    lock: Lock = seg.lock("refresh")
    assert lock.acquire(blocking=True, timeout=1.0)
    assert lock.locked() and not lock.owner_died
    lock.release()
    with lock:
        pass
    cond: Condition = seg.condition("ready")
    with cond:
        cond.notify()
        cond.notify_all()
        assert not cond.wait(0.001)
        assert cond.wait_for(lambda: True, timeout=0.001)
    assert cond.acquire(False)
    cond.release()
    assert isinstance(cond.lock, Lock)
    q: Queue = seg.queue("jobs", "64KiB", serializer="msgpack", single_producer=False, single_consumer=False)
    queues(q)


def queues(q: Queue) -> None:
    q.put({"id": 1}, block=True, timeout=1.0)
    q.put_nowait(2)
    q.put_many([3, 4], timeout=1.0)
    assert q.qsize() == 4 and not q.empty() and not q.full()
    assert q.get(timeout=1.0) == {"id": 1} and q.get_nowait() == 2
    assert q.get_many(max_items=10, block=False, max_bytes=None) == [3, 4]
    try:
        q.get(block=False)
    except queue.Empty:
        pass
    capacity: int = q.capacity + q.max_message_size
    assert capacity > 0 and q.serializer == "msgpack" and q.name == "user"
    assert not q.single_producer and not q.single_consumer
    q.detach()
    q.close()
    assert q.closed and list(q) == []
    q.unlink()
    assert Queue.struct_size(4096) > 4096


def caches() -> None:
    with Cache(size="8MiB", default_ttl=60.0, serializer="msgpack", evict=True, max_value_size="64KiB") as cache:
        cache.set("a", 1, ttl=FOREVER)
        cache["b"] = 2
        assert cache.add("c", 3) and cache.replace("c", 4) and cache.touch("c", 10.0)
        assert cache.get("a") == 1 and cache["b"] == 2 and "c" in cache and len(cache) == 3
        remaining = cache.ttl("c")
        assert remaining is not None and remaining > 0
        assert cache.incr("a", 2) == 3 and cache.decr("a") == 2
        cache.set_many({"d": 5, "e": 6}, ttl=30)
        assert cache.get_many(["d", "e", "x"]) == {"d": 5, "e": 6}
        assert cache.delete_many(["d", "e"]) == 2 and cache.delete("b")
        del cache["c"]
        assert sorted(cache.keys()) == ["a"] and list(cache) == ["a"]
        assert cache.get_or_compute("f", lambda: 7, ttl=5, stale_ttl=1, early_refresh=1.0, lease=5) == 7

        async def fetch() -> int:
            return 8

        assert asyncio.run(cache.aget_or_compute("g", fetch, ttl=5, negative_ttl=1.0)) == 8

        @cache.memoize(ttl=5)
        def square(n: int) -> int:
            return n * n

        assert square(3) == 9
        stats = cache.stats()
        assert stats["sets"] > 0 and isinstance(stats["per_process"], list)
        cache.check()
        cache.clear()
        assert cache.name is None and cache.segment.size > 0 and cache.default_ttl == 60.0
        try:
            cache["missing"]
        except KeyError:
            pass
    try:
        Segment.attach("no-such-segment", dir=tempfile.gettempdir(), timeout=0)
    except errors.SegmentNotFound as exc:
        assert isinstance(exc, herdcache.HerdcacheError)
    assert herdcache.parse_size("1KiB") == 1024


def main() -> int:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as dir:
        segments(dir)
    caches()
    return 0


if __name__ == "__main__":
    sys.exit(main())
