"""The eviction policies' contract, one process: what ``eviction="s3fifo"``
keeps that SIEVE does not, and how a cache's policy is chosen and kept.

- S3-FIFO is scan-resistant: keys read twice survive any number of keys
  set and read once.  SIEVE loses them: every scan key's read spares it
  once, so the hand goes round and reaches the hot keys unvisited.
- A key set once and never read goes before a key read again (both).
- A key evicted from S3-FIFO's small queue and set again soon after (its
  hash still in the ghost) enters the main queue: it outlives a fresh key
  set at the same moment, which SIEVE treats alike.
- The policy is chosen at creation and stored in the cache; an open
  without ``eviction=`` adopts it, an open asking for another one fails.

The caches are 8 MiB: one stripe (deterministic order), about 6,000 values
of 1,000 bytes.  Presence is asked with ``in`` only where a hit cannot
change what the test looks at (a hit is a read: it counts toward a key's
frequency).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from herdcache import Cache, errors

SIZE = "8MiB"
VALUE = 1000


def value_of(i: int) -> bytes:
    """The value stored under key i: recognisable, VALUE bytes."""
    head = b"%d:" % i
    return head + bytes([i % 251]) * (VALUE - len(head))


def fill_until_evicting(cache: Cache, prefix: str) -> int:
    """Set fresh keys PREFIX0, PREFIX1... until the first eviction; how many."""
    for i in range(cache.stats()["bytes_capacity"] // VALUE + 1):
        cache[f"{prefix}{i}"] = value_of(i)
        if cache.stats()["evictions"] > 0:
            return i + 1
    raise AssertionError("the cache never evicted")


@pytest.fixture(params=["sieve", "s3fifo"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """An 8 MiB raw cache evicting by each policy."""
    with Cache(size=SIZE, serializer="raw", eviction=request.param) as opened:
        yield opened


def survivors_of_a_scan(eviction: str) -> int:
    """How many of 100 keys, each read twice, a scan of keys set and read
    once, five times the cache's size, leaves."""
    with Cache(size=SIZE, serializer="raw", eviction=eviction) as cache:
        hot = [f"hot{i}" for i in range(100)]
        for i, key in enumerate(hot):
            cache[key] = value_of(i)
        for _ in range(2):
            for key in hot:
                assert cache[key] == value_of(hot.index(key))
        scan = 5 * cache.stats()["bytes_capacity"] // VALUE
        for i in range(scan):
            cache[f"scan{i}"] = value_of(i)
            assert cache[f"scan{i}"] == value_of(i)
        assert cache.stats()["evictions"] >= scan - cache.stats()["entries"]
        cache.check()
        return sum(key in cache for key in hot)


def test_s3fifo_keeps_keys_read_twice_through_a_scan() -> None:
    """Keys read twice move to S3-FIFO's main queue, which a scan of keys
    read once does not reach: they survive a scan five times the cache's
    size, all but the few a main eviction takes just after their promotion
    reset their count (as in libCacheSim's S3FIFO.c; one here).  SIEVE, in
    the same run, loses them all (such a scan is the weakness S3-FIFO
    answers)."""
    s3fifo = survivors_of_a_scan("s3fifo")
    sieve = survivors_of_a_scan("sieve")
    assert s3fifo >= 95, f"S3-FIFO kept {s3fifo} of 100 keys read twice"
    assert sieve <= 5, f"SIEVE kept {sieve} of 100: the scan did not test anything"


def test_a_key_set_once_goes_before_a_key_read_again(cache: Cache) -> None:
    """Two keys set first, one of them read twice: when the cache first
    has to evict, the unread one is the victim and the read one stays."""
    cache["once"] = value_of(1)
    cache["again"] = value_of(2)
    assert cache["again"] == value_of(2)
    assert cache["again"] == value_of(2)
    fill_until_evicting(cache, "fill")
    assert "once" not in cache
    assert cache["again"] == value_of(2)
    cache.check()


def test_a_key_back_from_the_ghost_outlives_a_fresh_one() -> None:
    """S3-FIFO: the first victim ("returning", set first, never read) is
    evicted from small and its hash kept in the ghost.  Set again, it
    enters main; "fresh", set at the same moment, enters small.  A scan of
    a fifth of the cache then evicts "fresh" with small's other keys, while
    "returning" stays in main."""
    with Cache(size=SIZE, serializer="raw", eviction="s3fifo") as cache:
        cache["returning"] = value_of(1)
        full = fill_until_evicting(cache, "fill")
        assert "returning" not in cache, "the first victim was not the oldest unread key"
        cache["returning"] = value_of(2)
        cache["fresh"] = value_of(3)
        for i in range(full // 5):
            cache[f"scan{i}"] = value_of(i)
        assert "fresh" not in cache
        assert cache["returning"] == value_of(2)
        cache.check()


def test_the_same_run_under_sieve_treats_both_alike() -> None:
    """The ghost test's control: under SIEVE the two keys set at the same
    moment share a fate (both gone after the scan), so the difference
    above is the ghost's doing."""
    with Cache(size=SIZE, serializer="raw", eviction="sieve") as cache:
        cache["returning"] = value_of(1)
        full = fill_until_evicting(cache, "fill")
        cache["returning"] = value_of(2)
        cache["fresh"] = value_of(3)
        for i in range(full + full // 5):
            cache[f"scan{i}"] = value_of(i)
        assert "fresh" not in cache and "returning" not in cache


def test_the_policy_is_stored_and_adopted(segment_name: str) -> None:
    """A cache created with eviction="s3fifo" keeps it: another open
    without eviction= (or asking for the same) evicts by S3-FIFO too, and
    so does a pickled handle; the default is SIEVE."""
    with Cache(size="4MiB") as anonymous:
        assert anonymous.eviction == "sieve"
    with Cache(segment_name, "8MiB", eviction="s3fifo") as created:
        assert created.eviction == "s3fifo"
        with Cache(segment_name) as adopted:
            assert adopted.eviction == "s3fifo"
        with Cache(segment_name, eviction="s3fifo") as same:
            assert same.eviction == "s3fifo"
        with pickle.loads(pickle.dumps(created)) as unpickled:
            assert unpickled.eviction == "s3fifo"


def test_another_policy_than_the_caches_own_is_refused(segment_name: str) -> None:
    """Asking an existing cache for another policy raises StructMismatch (a
    ValueError) naming both policies and the way out."""
    with Cache(segment_name, "8MiB", eviction="s3fifo"):
        with pytest.raises(errors.StructMismatch) as info:
            Cache(segment_name, eviction="sieve")
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert "s3fifo" in message and "sieve" in message and "eviction=None" in message


@pytest.mark.parametrize("bad", ["lru", "S3FIFO", "", 1, True])
def test_an_unknown_policy_is_invalid(bad: object) -> None:
    """A policy name outside "sieve", "s3fifo" and None is InvalidArgument
    (a ValueError) before any segment is made."""
    with pytest.raises(errors.InvalidArgument, match="eviction must be"):
        Cache(size="4MiB", eviction=bad)  # type: ignore[arg-type]
