"""get_or_compute within one process: re-entry and failures.

What users rely on: a computation that asks for its own key in the same
thread gets ReentrantCompute at once instead of waiting for itself
forever, and the key is not left stuck; asking for other keys, or for the
same key from another thread, works as usual.  Whatever a computation
raises, even an exception whose ``str()`` itself fails, the caller gets
that exception, the callers waiting for it get it too, and the key is
free for the next call at once (not stuck until the lease runs out).
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import HANG, joined, wait_until

import herdcache
from herdcache.errors import ReentrantCompute


class BrokenMessage(Exception):
    """An exception whose __str__ raises (it reads an attribute never set)."""

    def __str__(self) -> str:
        return self.detail  # type: ignore[attr-defined]


def waiting(cache: herdcache.Cache, what: str) -> None:
    """Until some caller waits for a computation (the stats count it)."""
    wait_until(lambda: cache.stats()["waits"] > 0, what, seen=lambda: f"{cache.stats()['waits']} waits")


@pytest.fixture
def cache():
    cache = herdcache.Cache(size="4MiB")
    yield cache
    cache.close()


def test_a_computation_asking_for_its_own_key_raises_reentrant_compute(cache) -> None:
    """The inner call raises ReentrantCompute (a RuntimeError), which the
    computation lets out; the key holds nothing and the next call
    computes normally."""

    def recursive() -> int:
        return cache.get_or_compute("fib:10", recursive, ttl=60) + 1

    with pytest.raises(ReentrantCompute, match="fib:10") as raised:
        cache.get_or_compute("fib:10", recursive, ttl=60)
    assert isinstance(raised.value, RuntimeError)
    assert "fib:10" not in cache
    assert cache.get_or_compute("fib:10", lambda: 55, ttl=60) == 55


def test_a_computation_may_ask_for_other_keys(cache) -> None:
    """Nesting distinct keys is fine: each is computed once."""
    calls = []

    def leaf() -> int:
        calls.append("leaf")
        return 2

    def root() -> int:
        calls.append("root")
        return cache.get_or_compute("leaf", leaf, ttl=60) * 21

    assert cache.get_or_compute("root", root, ttl=60) == 42
    assert cache.get_or_compute("root", root, ttl=60) == 42
    assert calls == ["root", "leaf"]


def test_another_thread_asking_for_the_key_waits_rather_than_raising(cache) -> None:
    """Re-entry is per thread: a second thread asking for the key while it
    is computed waits and gets the value."""
    got = []

    def other_thread() -> None:
        got.append(cache.get_or_compute("shared", pytest.fail, ttl=60))

    def compute() -> str:
        thread = threading.Thread(target=other_thread)
        thread.start()
        waiting(cache, "the other thread waits for this computation")
        compute.thread = thread
        return "value"

    assert cache.get_or_compute("shared", compute, ttl=60) == "value"
    joined(compute.thread)
    assert got == ["value"]


def test_an_exception_whose_str_fails_still_reaches_waiters_and_frees_the_key(cache) -> None:
    """The owner raises its own BrokenMessage, a waiting thread gets a
    BrokenMessage too, and the next call computes without waiting."""
    waiter_got = []

    def waiter() -> None:
        try:
            cache.get_or_compute("k", pytest.fail, ttl=60)
        except Exception as exc:  # what the waiter receives
            waiter_got.append(type(exc))

    def compute() -> str:
        compute.thread = threading.Thread(target=waiter)
        compute.thread.start()
        waiting(cache, "the waiter waits for this computation")
        raise BrokenMessage()

    with pytest.raises(BrokenMessage):
        cache.get_or_compute("k", compute, ttl=60)
    joined(compute.thread)
    assert waiter_got == [BrokenMessage]

    waits = cache.stats()["waits"]
    assert cache.get_or_compute("k", lambda: "next", ttl=60) == "next"
    assert cache.stats()["waits"] == waits


def test_a_full_cache_does_not_evict_a_key_being_computed(cache) -> None:
    """Memory pressure while a key is computed: the sets that evict other
    items leave the computation alone, so a later caller waits for it (one
    computation) and its result is stored."""
    release = threading.Event()
    started = threading.Event()
    got: dict[str, object] = {}

    def first() -> str:
        started.set()
        release.wait()
        return "first"

    def ask(who: str, fn) -> None:
        got[who] = cache.get_or_compute("hot", fn, ttl=60)

    owner = threading.Thread(target=ask, args=("owner", first))
    owner.start()
    assert started.wait(HANG), "the owner's computation never started"
    for i in range(40_000):  # about twice what the cache holds
        cache.set(f"filler:{i}", "x" * 200, ttl=60)
    assert cache.stats()["evictions"] > 0
    later = threading.Thread(target=ask, args=("later", lambda: "second"))
    later.start()
    wait_until(
        lambda: cache.stats()["waits"] > 0 or "later" in got,
        "the later caller waits for the computation (or returns)",
        seen=lambda: f"results {got}",
    )
    release.set()
    joined(owner, later)

    assert got == {"owner": "first", "later": "first"}
    assert cache.get("hot") == "first"


def test_an_infinite_negative_ttl_keeps_the_error_and_nan_is_refused(cache) -> None:
    """negative_ttl=inf remembers a failure for good (the core saturates
    instead of casting inf to an integer); NaN is refused before computing."""
    calls = []

    def fail() -> None:
        calls.append(1)
        raise LookupError("gone")

    for _ in range(3):
        with pytest.raises(LookupError, match="gone"):
            cache.get_or_compute("k", fail, negative_ttl=float("inf"))
    assert len(calls) == 1
    for option in ("negative_ttl", "early_refresh", "stale_ttl", "wait_timeout"):
        with pytest.raises(herdcache.errors.InvalidArgument):
            cache.get_or_compute("j", fail, **{option: float("nan")})
    assert len(calls) == 1


def test_expiring_the_cache_expires_the_value_a_refresh_carries(cache) -> None:
    """_expire_all() (a TieredCache host that may have missed invalidations)
    expires every value: the old value an early refresh carries too, so no
    get serves it as fresh afterwards, while the refresh itself goes on and
    publishes as usual; in a cache that cannot evict, making room does not
    reap that live flight either."""
    cache.set("k", "old", ttl=60)
    outcome, _data, _fmt, round_, *_ = cache._flight_begin("k", 60.0, 0, True)
    assert outcome == "compute"
    try:
        assert cache.get("k") == "old"  # fresh while the refresh runs
        cache._expire_all()
        assert cache.get("k") is None and "k" not in cache and cache._lookup("k") is None
        outcome, data, *_ = cache._flight_begin("k", 60.0)
        assert outcome == "stale" and cache._loads(data) == "old"  # its stale window is kept
    finally:
        cache._flight_abort("k", round_)


def test_a_takeover_keeps_the_old_value_expired(cache) -> None:
    """A round that takes over an abandoned refresh carries the old value
    on; if the cache was expired meanwhile, that value stays expired for
    the new round (the cap rides in the new record), not fresh again."""
    cache.set("k", "old", ttl=60)
    outcome, _data, _fmt, first, *_ = cache._flight_begin("k", 0.001, 0, True)  # a lease that ends at once
    assert outcome == "compute"
    cache._expire_all()
    deadline = time.monotonic() + 5
    while (taken := cache._flight_begin("k", 60.0))[0] != "compute":  # the lease ends: a takeover
        assert time.monotonic() < deadline, f"no takeover after the lease: {taken[0]}"
    try:
        assert taken[3] != first
        assert cache.get("k") is None and cache._lookup("k") is None, "the takeover made the old value fresh"
    finally:
        cache._flight_abort("k", taken[3])


def test_a_caller_served_the_old_value_of_a_refresh_learns_its_round(cache) -> None:
    """While an early refresh runs, another caller is served the old value
    ("stale") and told the round that recomputes it, so that one that will
    not take the old value (the tier's) can wait for that round's result
    instead of starting a round of its own afterwards."""
    cache.set("k", "old", ttl=60)
    outcome, _data, _fmt, round_, *_ = cache._flight_begin("k", 60.0, 0, True)
    assert outcome == "compute" and round_ > 0
    try:
        outcome, data, _fmt, named, *_ = cache._flight_begin("k", 60.0)
        assert outcome == "stale" and cache._loads(data) == "old"
        assert named == round_
    finally:
        cache._flight_abort("k", round_)
