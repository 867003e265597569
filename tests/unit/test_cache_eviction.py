"""A full cache, one process: with eviction it keeps accepting values and
keeps the ones being read (SIEVE and S3-FIFO alike); without, it refuses
with CacheFull and disturbs nothing; and memory of expired keys is reused
either way.  What tells the two policies apart is test_eviction_policy.py.

The cache is 8 MiB: one stripe of about 6.5 MiB of items.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from helpers import wait_until

from herdcache import Cache, errors

SIZE = "8MiB"
VALUE = 1000  # bytes: about 6,000 values fill the cache


def value_of(i: int, size: int = VALUE) -> bytes:
    """The value stored under key i: recognisable, of ``size`` bytes."""
    head = b"%d:" % i
    return head + bytes([i % 251]) * (size - len(head))


@pytest.fixture(params=["sieve", "s3fifo"])
def evicting(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """A small raw cache that evicts, by each policy."""
    with Cache(size=SIZE, serializer="raw", eviction=request.param) as cache:
        yield cache


@pytest.fixture
def bounded() -> Iterator[Cache]:
    """A small raw cache that refuses when full."""
    with Cache(size=SIZE, serializer="raw", evict=False) as cache:
        yield cache


def fill_until_full(cache: Cache, ttl: float | None = None) -> int:
    """Set keys 0, 1, 2... until CacheFull; return how many were stored."""
    capacity = cache.stats()["bytes_capacity"]
    for i in range(capacity // VALUE + 1):
        try:
            cache.set(f"k{i}", value_of(i), ttl=ttl)
        except errors.CacheFull:
            return i
    raise AssertionError("the cache never filled up")


def test_an_evicting_cache_accepts_values_far_past_its_size(evicting: Cache) -> None:
    """Sets never fail with evict=True: entries are evicted (and counted),
    every value still present is intact, the newest is present, and the
    table's invariants hold."""
    count = 5 * evicting.stats()["bytes_capacity"] // VALUE
    for i in range(count):
        evicting[f"k{i}"] = value_of(i)
    stats = evicting.stats()
    assert stats["evictions"] > 0
    assert 0 < len(evicting) < count
    assert evicting[f"k{count - 1}"] == value_of(count - 1)
    present = 0
    for i in range(count):
        got = evicting.get(f"k{i}")
        if got is not None:
            assert got == value_of(i)
            present += 1
    assert present == len(evicting) == stats["entries"]
    evicting.check()


def test_eviction_makes_room_for_values_of_any_size(evicting: Cache) -> None:
    """With values from 10 bytes to the largest allowed, mixed at random,
    every set succeeds and every value present is intact: eviction makes a
    contiguous block however fragmented the memory is."""
    rng = random.Random(5)
    largest = evicting.stats()["max_value_size"]
    sizes = {}
    for i in range(3000):
        size = rng.choice([10, 100, 1000, 20_000, rng.randrange(10, largest + 1)])
        evicting[f"k{i}"] = value_of(i, size)
        sizes[i] = size
        if i % 500 == 0:
            evicting.check()
    for i, size in sizes.items():
        got = evicting.get(f"k{i}")
        assert got is None or got == value_of(i, size)
    assert evicting.stats()["evictions"] > 0
    evicting.check()


def test_keys_being_read_survive_a_scan(evicting: Cache) -> None:
    """Eviction keeps what is read: a hot set read between the inserts of a
    scan of one-hit keys five times the cache's size stays cached (FIFO
    would have evicted all of it)."""
    hot = [f"hot{i}" for i in range(200)]
    for i, key in enumerate(hot):
        evicting[key] = value_of(i)
    scan = 5 * evicting.stats()["bytes_capacity"] // VALUE
    for i in range(scan):
        evicting[f"scan{i}"] = value_of(i)
        if i % 100 == 0:
            for key in hot:
                key in evicting  # noqa: B015 - the read is the point
    survivors = sum(key in evicting for key in hot)
    assert evicting.stats()["evictions"] >= scan - evicting.stats()["entries"]
    assert survivors >= 0.9 * len(hot), f"only {survivors} of {len(hot)} hot keys survived"
    evicting.check()


def test_a_full_cache_without_eviction_refuses_and_disturbs_nothing(bounded: Cache) -> None:
    """With evict=False a full cache raises CacheFull (a SegmentFull and a
    MemoryError) again and again, evicts nothing, and every value stored
    before is still there, intact; deleting one makes room again."""
    stored = fill_until_full(bounded)
    assert stored > 0
    for _ in range(3):
        with pytest.raises(errors.CacheFull) as info:
            bounded["one more"] = value_of(0)
        assert isinstance(info.value, errors.SegmentFull) and isinstance(info.value, MemoryError)
    assert "one more" not in bounded
    bounded.check()
    stats = bounded.stats()
    assert stats["evictions"] == 0
    assert len(bounded) == stats["entries"] == stored
    assert all(bounded[f"k{i}"] == value_of(i) for i in range(stored))
    del bounded["k0"]
    bounded["one more"] = value_of(0)
    bounded.check()


def test_a_refused_add_or_replace_needs_no_room(bounded: Cache) -> None:
    """On a full cache that may not evict, add of a present key and replace
    of an absent one return False, as they would on any cache: they store
    nothing, so they need no room."""
    stored = fill_until_full(bounded)
    assert bounded.add("k0", value_of(1)) is False
    assert bounded.replace("absent", value_of(1)) is False
    assert bounded["k0"] == value_of(0)
    assert len(bounded) == stored
    bounded.check()


def test_a_refused_add_evicts_nothing(evicting: Cache) -> None:
    """On a full evicting cache, add of a present key stores nothing and so
    evicts nothing: no entry is lost to an operation that did not write."""
    count = 2 * evicting.stats()["bytes_capacity"] // VALUE
    for i in range(count):
        evicting[f"k{i}"] = value_of(i)
    last = f"k{count - 1}"
    before = evicting.stats()
    keys = set(evicting)
    for _ in range(50):
        assert evicting.add(last, value_of(0)) is False
        assert evicting.replace("absent", value_of(0)) is False
    assert evicting.stats()["evictions"] == before["evictions"]
    assert set(evicting) == keys
    assert evicting[last] == value_of(count - 1)


def test_memory_of_expired_keys_is_reused(bounded: Cache) -> None:
    """Once keys expire, their memory takes new values even without
    eviction: a cache that was full of them accepts as many again."""
    stored = fill_until_full(bounded, ttl=3600)
    for i in range(stored):
        assert bounded.touch(f"k{i}", 0.001)
    wait_until(lambda: len(bounded) == 0, "every key expired")
    for i in range(stored):
        bounded[f"new{i}"] = value_of(i)
    assert len(bounded) == stored
    assert bounded.stats()["expirations"] > 0
    bounded.check()


@pytest.mark.parametrize("size", ["1MiB", SIZE, "64MiB"])
def test_the_largest_value_always_fits_a_full_evicting_cache(size: str) -> None:
    """A value of max_value_size under a 250-byte key is accepted by an
    evicting cache however full it is (eviction frees a region that large)."""
    with Cache(size=size, serializer="raw") as cache:
        for i in range(2 * cache.stats()["bytes_capacity"] // 3000):
            cache[f"small{i}"] = b"x" * 3000
        largest = cache.stats()["max_value_size"]
        cache["k" * 250] = b"y" * largest
        assert cache["k" * 250] == b"y" * largest
        cache.check()
