"""cachelib's contract (its docs and its tests' CommonTests), checked on
herdcache's cachelib backend: set/get/add/delete and their *_many forms,
inc/dec from 0, cachelib's timeouts (0 = never), a swappable serializer,
key prefixes; plus what herdcache adds: inc atomic across processes and a
single-flight get_or_set."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from herd_helpers import HANG, after_the_herd_waits, run_herd, wait_until

from herdcache.contrib.cachelib import HerdcacheCache

SAMPLES: dict[str, Any] = {
    "bacon": "spam",
    "eggs": "sausage",
    "int": 42,
    "float": 1.5,
    "list": [1, "two", 3.0],
    "dict": {"nested": {"a": (1, 2)}},
    "bytes": b"\x00\xff",
    "unicode ключ": "значение",
}


@pytest.fixture(scope="module")
def segdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hc-cachelib-test-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cache(segdir: str) -> Iterator[HerdcacheCache]:
    """A cache on a named segment, emptied after each test."""
    opened = HerdcacheCache("cachelib", default_timeout=300, size="8MiB", dir=segdir)
    yield opened
    opened.cache.clear()


def test_set_get_and_many(cache: HerdcacheCache) -> None:
    """set returns True and get gives the value back; set_many returns the
    keys it set, get_many a list in key order (None when absent), get_dict a
    dict."""
    for key, value in SAMPLES.items():
        assert cache.set(key, value) is True
        assert cache.get(key) == value
    assert cache.get("absent") is None
    cache.cache.clear()
    assert cache.set_many(SAMPLES) == list(SAMPLES)
    assert cache.get_many(*SAMPLES) == list(SAMPLES.values())
    assert cache.get_many("bacon", "absent") == ["spam", None]
    assert cache.get_dict(*SAMPLES) == SAMPLES
    assert cache.has("bacon") and not cache.has("absent")


def test_add_and_delete(cache: HerdcacheCache) -> None:
    """add refuses present keys; delete says whether it removed;
    delete_many returns the keys now absent (a missing one included)."""
    cache.set_many(SAMPLES)
    assert not any(cache.add(key, "updated") for key in SAMPLES)
    assert cache.get_many(*SAMPLES) == list(SAMPLES.values())
    assert cache.add("new", 1) and cache.get("new") == 1
    assert cache.delete("new") is True and cache.delete("new") is False
    assert cache.delete_many(*SAMPLES, "never-set") == [*SAMPLES, "never-set"]
    assert not any(cache.get_many(*SAMPLES))


def test_inc_and_dec_start_from_zero(cache: HerdcacheCache) -> None:
    """inc/dec of a missing key start from 0; of a present one add to it."""
    for n in (1, 7, -3, 10**12):
        assert cache.get(f"{n}-inc") is None
        assert cache.inc(f"{n}-inc", n) == n and cache.get(f"{n}-inc") == n
        assert cache.dec(f"{n}-dec", n) == -n and cache.get(f"{n}-dec") == -n
        assert cache.dec(f"{n}-inc", 5) == n - 5
    assert cache.inc("plain") == 1 and cache.inc("plain") == 2


def test_inc_keeps_the_expiry_of_the_key(cache: HerdcacheCache) -> None:
    """inc of a timed key keeps its expiry; of a new key, the default."""
    cache.set("timed", 1, timeout=60)
    cache.inc("timed")
    assert 50 < cache.cache.ttl("timed") <= 60
    cache.inc("fresh")
    assert 290 < cache.cache.ttl("fresh") <= 300


def _increment(segdir: str, times: int, start: Any) -> None:
    cache = HerdcacheCache("cachelib", size="8MiB", dir=segdir)
    start.wait(HANG)
    for _ in range(times):
        cache.inc("counter")


def test_inc_is_atomic_across_processes(cache: HerdcacheCache, segdir: str) -> None:
    """4 processes (spawned: they attach by name) each inc a missing key
    300 times: no increment is lost."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    children = [context.Process(target=_increment, args=(segdir, 300, start)) for _ in range(4)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(HANG)
        assert child.exitcode == 0, f"an incrementing child exited with {child.exitcode}"
    assert cache.get("counter") == 1200


def test_cachelib_timeouts(cache: HerdcacheCache, segdir: str) -> None:
    """0 never expires; None is the default_timeout; a timedelta counts
    whole seconds; a default_timeout of 0 never expires either."""
    cache.set("t0", "v", timeout=0)
    assert cache.cache.ttl("t0") is None
    cache.set("default", "v")
    assert 290 < cache.cache.ttl("default") <= 300
    cache.set("delta", "v", timeout=dt.timedelta(minutes=2))
    assert 110 < cache.cache.ttl("delta") <= 120
    forever = HerdcacheCache("cachelib", default_timeout=0, size="8MiB", dir=segdir)
    forever.set("never", "v")
    assert forever.cache.ttl("never") is None


def test_a_key_expires_after_its_timeout(cache: HerdcacheCache) -> None:
    """A key set with timeout=1 is gone after a second; timeout=0 stays."""
    for key, value in SAMPLES.items():
        cache.set(f"{key}-t0", value, timeout=0)
        cache.set(f"{key}-t1", value, timeout=1)
    wait_until(lambda: not any(cache.has(f"{key}-t1") for key in SAMPLES), "the timeout=1 keys to expire")
    assert cache.get_many(*(f"{key}-t0" for key in SAMPLES)) == list(SAMPLES.values())


class JsonSerializer:
    """A cachelib-style serializer (dumps takes a protocol) storing JSON."""

    def dumps(self, value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def test_the_serializer_can_be_swapped(segdir: str) -> None:
    """Assigning ``serializer`` (as Flask-Caching's CACHE_SERIALIZER does)
    changes how values are stored: herdcache keeps the bytes it makes."""
    cache = HerdcacheCache("cachelib", size="8MiB", dir=segdir, key_prefix="json:")
    cache.serializer = JsonSerializer()
    cache.set("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    assert cache.cache.get("json:k") == b'{"a": [1, 2]}'
    assert cache.inc("n") == 1 and cache.cache.get("json:n") == b"1"
    cache.clear()


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PicklingError("no")


def test_a_value_that_cannot_be_stored_returns_false_and_drops_the_old(cache: HerdcacheCache) -> None:
    """cachelib reports backend failures as False; herdcache's rule holds:
    a failed set leaves no stale old value."""
    cache.set("k", "old")
    assert cache.set("k", Unpicklable()) is False
    assert cache.get("k") is None
    cache.set("k", "old")
    assert cache.set("k", b"x" * (cache.cache.stats()["max_value_size"] + 1)) is False
    assert cache.get("k") is None
    assert cache.add("fresh", Unpicklable()) is False


def test_key_prefixes_share_the_segment_but_not_keys(cache: HerdcacheCache, segdir: str) -> None:
    """Two prefixes on one segment: each sees its own keys, and clear()
    removes only its own."""
    mine = HerdcacheCache("cachelib", size="8MiB", dir=segdir, key_prefix="mine:")
    cache.set("k", "plain")
    mine.set("k", "mine")
    assert cache.get("k") == "plain" and mine.get("k") == "mine"
    assert mine.clear() is True
    assert mine.get("k") is None and cache.get("k") == "plain"


def _herd_member(segdir: str, barrier: Any, results: Any) -> None:
    cache = HerdcacheCache("cachelib", size="8MiB", dir=segdir)

    def slow() -> dict[str, int]:
        cache.inc("computations")
        return after_the_herd_waits(cache.cache.stats, barrier.parties, {"pid": os.getpid()}, since)

    since = cache.cache.stats()["waits"]
    barrier.wait(HANG)
    results.put(cache.get_or_set("herd", slow, 60))


def test_get_or_set_computes_once_for_a_herd_of_processes(cache: HerdcacheCache, segdir: str) -> None:
    """6 processes miss one key together: one computes, the others wait
    and get its value."""
    values = run_herd(_herd_member, 6, segdir)
    assert cache.get("computations") == 1
    assert len({value["pid"] for value in values}) == 1 and cache.get("herd") == values[0]
    assert cache.get_or_set("herd", lambda: pytest.fail("computed again")) == values[0]
