"""Django's cache contract, checked on herdcache's backend the way Django
checks its own backends (its ``tests/cache/tests.py``, BaseCacheTests):
every method, timeouts, KEY_PREFIX/VERSION/KEY_FUNCTION, key warnings,
pickling, plus what only this backend promises (single flight across
processes, a* methods in the loop's thread, django-redis's extras).

The test project is ``django_project``; every alias there is one
herdcache segment seen through other key options.  Expiry is observed by
polling with a deadline or by reading ``ttl()``, never by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core import signals
from django.core.cache import CacheKeyWarning, cache, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from herd_helpers import HANG, after_the_herd_waits, run_herd, wait_until

from herdcache.contrib.django import HerdcacheCache


class Unpicklable:
    """Refuses to be pickled, as Django's tests' Unpicklable does."""

    def __getstate__(self) -> Any:
        raise pickle.PickleError("no")


def module_function() -> int:
    """A function: pickled by reference."""
    return 42


class ModuleClass:
    """A class: pickled by reference."""


@pytest.fixture(autouse=True)
def _cleared() -> Iterator[None]:
    yield
    cache.clear()


def test_the_backend_is_herdcache_and_shared_by_every_alias() -> None:
    """Every alias and thread gets its own backend object, all on one
    herdcache.Cache (one mapping of the segment per process)."""
    assert isinstance(caches["default"], HerdcacheCache)
    objects: list[Any] = []
    thread = threading.Thread(target=lambda: objects.append(caches["default"]))
    thread.start()
    thread.join(HANG)
    assert objects and objects[0] is not caches["default"]
    assert objects[0].cache is caches["default"].cache is caches["v2"].cache


def test_set_get_add_delete() -> None:
    """The basic calls, with Django's return values: add refuses a present
    key, None is a value (not a miss), delete says whether it removed."""
    assert cache.get("k") is None and cache.get("k", "bang") == "bang"
    cache.set("k", "value")
    assert cache.get("k") == "value"
    assert cache.add("added", "v") is True and cache.add("added", "w") is False
    assert cache.get("added") == "v"
    cache.set("none", None)
    assert cache.get("none", "default") is None
    assert cache.has_key("none") and "none" in cache and "absent" not in cache
    assert not cache.has_key("absent")
    assert cache.delete("k") is True and cache.delete("k") is False
    assert cache.get("k") is None


def test_many_calls() -> None:
    """get_many/set_many/delete_many: iterables of keys, None values, the
    empty list of failed keys, and delete_many returning None."""
    assert cache.set_many({"a": "a", "b": "b", "c": "c", "x": None}) == []
    assert cache.set_many({}) == []
    assert cache.get_many(["a", "c", "e"]) == {"a": "a", "c": "c"}
    assert cache.get_many(iter(["a", "b", "x"])) == {"a": "a", "b": "b", "x": None}
    assert cache.delete_many(["a", "b"]) is None
    assert cache.delete_many([]) is None
    assert cache.get_many(["a", "b", "c"]) == {"c": "c"}


def test_any_picklable_value_round_trips() -> None:
    """Django stores anything picklable: functions and classes by
    reference, unicode keys and values, compressed bytes."""
    values = {
        "string": "this is a string",
        "int": 42,
        "bool": True,
        "list": [1, 2, 3],
        "tuple": (1, 2, 3),
        "dict": {"A": 1},
        "function": module_function,
        "class": ModuleClass,
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "binary": zlib.compress(b"value_to_be_compressed"),
    }
    for key, value in values.items():
        cache.set(key, value)
        assert cache.get(key) == value
        assert cache.delete(key) and cache.add(key, value)
    cache.delete_many(values)
    cache.set_many(values)
    assert cache.get_many(values) == values


def test_an_unpicklable_value_raises_a_pickleerror_and_drops_the_old_one() -> None:
    """add and set of an unpicklable value raise pickle.PickleError (not
    silently); the set leaves no stale old value behind."""
    cache.set("k", "old")
    with pytest.raises(pickle.PickleError):
        cache.add("new", Unpicklable())
    with pytest.raises(pickle.PicklingError):
        cache.set("k", Unpicklable())
    with pytest.raises(pickle.PicklingError):
        cache.set("k", lambda: None)  # a lambda: pickle's own refusal
    assert cache.get("k") is None and cache.get("new") is None


def test_a_value_too_large_is_not_stored_and_the_old_one_goes() -> None:
    """As Django's memcached backends: a set that cannot store (too large)
    does not raise, and the key's old value is removed, so cached-db
    sessions never read stale data; set_many lists the key as failed."""
    too_large = b"x" * (cache.cache.stats()["max_value_size"] + 1)
    cache.set("k", "old")
    cache.set("k", too_large)
    assert cache.get("k") is None
    cache.set_many({"k": "old", "other": 1})
    assert cache.set_many({"k": too_large, "other": 2}) == ["k"]
    assert cache.get_many(["k", "other"]) == {"other": 2}
    assert cache.add("k", too_large) is False


def test_prefix_version_and_key_function_keep_keys_apart() -> None:
    """Aliases with another KEY_PREFIX, VERSION or KEY_FUNCTION (by object
    or dotted path) share the segment but never each other's keys."""
    cache.set("somekey", "value")
    assert not caches["prefix"].has_key("somekey")
    caches["prefix"].set("somekey", "value2")
    assert cache.get("somekey") == "value" and caches["prefix"].get("somekey") == "value2"
    assert caches["custom_key"].get("somekey") is None
    caches["custom_key"].set("answer", 42)
    assert cache.get("answer") is None and caches["custom_key2"].get("answer") == 42
    cache.set("answer1", 42)
    assert caches["v2"].get("answer1") is None
    assert caches["v2"].get("answer1", version=1) == 42
    caches["v2"].set("answer2", 43)
    assert cache.get("answer2") is None and cache.get("answer2", version=2) == 43
    assert cache.add("answer2", 1) is True and caches["v2"].add("answer2", 1, version=1) is False
    cache.set_many({"f": 37}, version=2)
    assert cache.get_many(["f"]) == {} and caches["v2"].get_many(["f"]) == {"f": 37}
    assert caches["v2"].delete("f") and cache.get("f", version=2) is None


def test_incr_and_decr_version_move_a_key() -> None:
    """incr_version/decr_version move a value between versions; a missing
    key raises ValueError; None moves like any value."""
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer", version=2) is None and cache.get("answer", version=3) == 42
    assert cache.decr_version("answer", version=3) == 2
    assert cache.get("answer", version=2) == 42
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")
    cache.set("null", None)
    assert cache.incr_version("null") == 2


def test_incr_and_decr() -> None:
    """incr/decr add atomically, accept floats as LocMem does, raise
    ValueError on a missing key and TypeError on a value that is no number."""
    cache.set("answer", 41)
    assert cache.incr("answer") == 42 and cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52 and cache.incr("answer", -10) == 42
    assert cache.decr("answer") == 41 and cache.decr("answer", -1) == 42
    cache.set("answer", 1.5)
    assert cache.incr("answer", 0.25) == 1.75 and cache.decr("answer") == 0.75
    for call in (cache.incr, cache.decr):
        with pytest.raises(ValueError, match="not found"):
            call("does_not_exist")
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")
    cache.set("v", 37, version=1)
    cache.set("v", 42, version=2)
    assert caches["v2"].incr("v") == 43 and cache.get("v") == 37


# -- timeouts ---------------------------------------------------------------------


def test_default_timeout_none_and_long_timeouts() -> None:
    """No timeout: the TIMEOUT setting (300 s here); None: forever, also as
    the alias's TIMEOUT; a float or a timeout over 30 days is seconds."""
    cache.set("default", 1)
    assert 290 < cache.ttl("default") <= 300
    cache.set("forever", 1, None)
    assert cache.ttl("forever") is None
    assert cache.add("forever2", 2, None) and cache.ttl("forever2") is None
    caches["forever"].set("alias-forever", 1)
    assert cache.ttl("alias-forever") is None
    cache.set_many({"m1": 1, "m2": 2}, None)
    assert cache.ttl("m1") is None and cache.ttl("m2") is None
    month = 60 * 60 * 24 * 30 + 1
    cache.set("month", "eggs", month)
    assert cache.get("month") == "eggs" and month - 10 < cache.ttl("month") <= month
    cache.set("float", "spam", 100.2)
    assert cache.get("float") == "spam"


def test_zero_or_negative_timeout_expires_at_once() -> None:
    """0 (or less) caches nothing: set, add (which still returns True),
    set_many, and touch, which expires a present key."""
    for timeout in (0, -1):
        cache.set("k1", "eggs", timeout)
        assert cache.get("k1") is None
        assert cache.add("k2", "ham", timeout) is True
        assert cache.get("k2") is None
        cache.set_many({"k3": "sausage"}, timeout)
        assert cache.get("k3") is None
        cache.set("k5", "belgian fries", timeout=5)
        assert cache.touch("k5", timeout=timeout) is True
        assert cache.get("k5") is None


def test_a_key_expires_after_its_timeout() -> None:
    """After its timeout a key is gone for get, has_key and add."""
    cache.set_many({"e1": 1, "e2": 2, "e3": 3}, 0.05)
    wait_until(lambda: not cache.has_key("e1"), "e1 to expire")
    wait_until(lambda: cache.get("e2") is None and cache.get("e3") is None, "e2, e3 to expire")
    assert cache.add("e2", "new") is True and cache.get("e2") == "new"


def test_touch_sets_a_new_timeout() -> None:
    """touch gives a present key a new timeout (the default without one,
    forever with None) and returns False for an absent key."""
    cache.set("t", "v", timeout=1)
    assert cache.touch("t", timeout=60) is True and 50 < cache.ttl("t") <= 60
    assert cache.touch("t") is True and 290 < cache.ttl("t") <= 300
    assert cache.touch("t", None) is True and cache.ttl("t") is None
    assert cache.touch("nonexistent") is False


# -- keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, message",
    [
        ("key with spaces and 清", "Cache key contains characters that will cause errors if used with memcached"),
        ("a" * 250 + "清", "Cache key will cause errors if used with memcached"),
    ],
    ids=["spaces", "251 characters"],
)
def test_keys_memcached_refuses_warn_and_work(key: str, message: str) -> None:
    """Keys memcached would refuse give Django's CacheKeyWarning from every
    operation, and the operation works (long keys go under a digest)."""
    old_func = cache.key_func
    cache.key_func = lambda key, *args: key  # as Django's test: no prefix
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("add", lambda: cache.add(key, 1)),
        ("get", lambda: cache.get(key)),
        ("set", lambda: cache.set(key, 1)),
        ("incr", lambda: cache.incr(key)),
        ("decr", lambda: cache.decr(key)),
        ("touch", lambda: cache.touch(key)),
        ("get_many", lambda: cache.get_many([key, "b"])),
        ("set_many", lambda: cache.set_many({key: 1, "b": 2})),
        ("has_key", lambda: cache.has_key(key)),
        ("delete", lambda: cache.delete(key)),
        ("delete_many", lambda: cache.delete_many([key, "b"])),
    ]
    results = {}
    try:
        for name, call in calls:
            with pytest.warns(CacheKeyWarning, match=message):
                results[name] = call()
    finally:
        cache.key_func = old_func
    assert results["add"] is True and results["get"] == 1 and results["incr"] == 2
    assert results["decr"] == 1 and results["touch"] is True
    assert results["get_many"] == {key: 1} and results["has_key"] is True
    assert results["delete"] is True


# -- close, get_or_set --------------------------------------------------------------


def test_close_after_every_request_keeps_the_cache() -> None:
    """Django closes caches when a request finishes and goes on using them."""
    cache.set("k", "v")
    cache.close()
    signals.request_finished.send(sender=None)
    assert cache.get("k") == "v"
    cache.set("k2", "v2")
    assert caches["default"].get("k2") == "v2"


def test_get_or_set() -> None:
    """get_or_set stores and returns the default (called if callable),
    stores None too, and keeps versions apart; default is required."""
    assert cache.get_or_set("projector", 42) == 42 and cache.get("projector") == 42
    assert cache.get_or_set("projector", 43) == 42
    assert cache.get_or_set("callable", lambda: "value") == "value"
    assert cache.get_or_set("callable", lambda: pytest.fail("computed twice")) == "value"
    assert cache.get_or_set("null", None) is None and cache.get("null", "default") is None
    assert cache.get_or_set("null2", lambda: None) is None and cache.has_key("null2")
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=1) is None
    with pytest.raises(TypeError, match="default"):
        cache.get_or_set("brian")  # type: ignore[call-arg]
    assert cache.get_or_set("timed", 1, timeout=60) == 1 and 50 < cache.ttl("timed") <= 60


def _herd_member(key: str, barrier: Any, results: Any) -> None:
    """Child: wait for the herd, then get_or_set a slow computation."""
    backend = caches["default"]

    def slow_query() -> dict[str, int]:
        backend.incr("computations")
        return after_the_herd_waits(backend.cache.stats, barrier.parties, {"computed_by": os.getpid()}, since)

    since = backend.cache.stats()["waits"]
    barrier.wait(HANG)
    results.put(backend.get_or_set(key, slow_query, 60))


def test_get_or_set_computes_once_for_a_herd_of_processes() -> None:
    """8 forked workers miss one key at once: the slow callable runs once,
    the seven others wait for it and all get its value (Django's own
    get_or_set would run it in every worker)."""
    cache.set("computations", 0, None)
    values = run_herd(_herd_member, 8, "herd")
    assert cache.get("computations") == 1
    assert len({value["computed_by"] for value in values}) == 1
    assert cache.get("herd") == values[0]


# -- async -------------------------------------------------------------------------------


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    """An executor that fails the test if anything is handed to it."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"work went to a thread: {args[:1]}")


def test_every_async_method_runs_in_the_loop_thread() -> None:
    """Each a* method does its work in the event loop's thread (Django's
    default hops to another thread), an aget_or_set miss included: the key
    function records where, and the loop's executor refuses all work."""
    threads: set[int] = set()
    old_func = cache.key_func

    def recording_key_func(key: str, prefix: str, version: int) -> str:
        threads.add(threading.get_ident())
        return old_func(key, prefix, version)

    async def every_call() -> dict[str, Any]:
        return {
            "aset": await cache.aset("a", 1),
            "aadd": await cache.aadd("b", 2),
            "aget": await cache.aget("a"),
            "atouch": await cache.atouch("a", 60),
            "aincr": await cache.aincr("a", 5),
            "adecr": await cache.adecr("a"),
            "ahas_key": await cache.ahas_key("b"),
            "aset_many": await cache.aset_many({"c": 3, "d": 4}),
            "aget_many": await cache.aget_many(["a", "c", "z"]),
            "adelete": await cache.adelete("c"),
            "adelete_many": await cache.adelete_many(["d"]),
            "aget_or_set hit": await cache.aget_or_set("a", 99),
            "aget_or_set miss": await cache.aget_or_set("e", lambda: 7),
            "aincr_version": await cache.aincr_version("e"),
            "aclose": await cache.aclose(),
        }

    cache.key_func = recording_key_func
    try:
        loop_thread: list[int] = []

        async def main() -> dict[str, Any]:
            loop_thread.append(threading.get_ident())
            # No waiting for another process here, so nothing may go to a thread.
            asyncio.get_running_loop().set_default_executor(NoThreads())
            return await every_call()

        results = asyncio.run(main())
    finally:
        cache.key_func = old_func
    assert threads == set(loop_thread)
    assert results == {
        "aset": None, "aadd": True, "aget": 1, "atouch": True, "aincr": 6, "adecr": 5,
        "ahas_key": True, "aset_many": [], "aget_many": {"a": 5, "c": 3}, "adelete": True,
        "adelete_many": None, "aget_or_set hit": 5, "aget_or_set miss": 7, "aincr_version": 2,
        "aclose": None,
    }  # fmt: skip
    assert asyncio.run(cache.aget("e", version=2)) == 7
    asyncio.run(cache.aclear())
    assert cache.get("a") is None


# -- django-redis's extras -------------------------------------------------------------------


def test_ttl_expire_and_persist() -> None:
    """ttl: whole seconds left, None if forever, 0 if absent; expire sets
    a timeout; persist makes a key permanent."""
    assert cache.ttl("absent") == 0
    cache.set("k", 1, 30)
    assert 29 <= cache.ttl("k") <= 30
    assert cache.expire("k", 120) and 110 < cache.ttl("k") <= 120
    assert cache.persist("k") and cache.ttl("k") is None
    assert not cache.expire("absent", 5) and not cache.persist("absent")


def _hold(lock_key: str, held: Any, release: Any) -> None:
    lock = caches["default"].lock(lock_key)
    with lock:
        held.set()
        release.wait(HANG)


def test_lock_is_shared_by_processes() -> None:
    """cache.lock(name) is one lock for every process: a child holds it,
    the parent cannot take it until the child lets go."""
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    child = context.Process(target=_hold, args=("rebuild", held, release))
    child.start()
    try:
        assert held.wait(HANG), "the child never took the lock"
        lock = cache.lock("rebuild")
        assert not lock.acquire(blocking=False)
        release.set()
        assert lock.acquire(timeout=HANG)
        lock.release()
    finally:
        release.set()
        child.join(HANG)
    assert cache.lock("other").acquire(blocking=False)


def test_iter_keys_keys_and_delete_pattern() -> None:
    """Glob patterns over this alias's keys in its version: user keys come
    back without prefix and version, other aliases' keys stay untouched."""
    cache.set_many({"user:1": 1, "user:2": 2, "item:1": 3})
    caches["v2"].set("user:3", 4)
    caches["prefix"].set("user:4", 5)
    assert sorted(cache.iter_keys("user:*")) == ["user:1", "user:2"]
    assert sorted(cache.keys("*")) == ["item:1", "user:1", "user:2"]
    assert caches["v2"].keys("user:*") == ["user:3"]
    assert cache.delete_pattern("user:*") == 2
    assert cache.keys("*") == ["item:1"]
    assert caches["v2"].get("user:3") == 4 and caches["prefix"].get("user:4") == 5


def test_default_timeout_sentinel_is_djangos() -> None:
    """Calls given Django's DEFAULT_TIMEOUT object use the TIMEOUT setting."""
    cache.set("k", 1, DEFAULT_TIMEOUT)
    assert 290 < cache.ttl("k") <= 300


def test_no_warning_from_an_ordinary_key() -> None:
    """An ordinary key warns about nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.set("plain-key", 1)
        assert cache.get("plain-key") == 1
