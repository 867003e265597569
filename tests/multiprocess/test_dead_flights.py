"""Flights nobody will finish: their owner was SIGKILLed, or overran its
lease (issue 9, defects 3 and 4).

What users rely on: a key being computed is absent to every operation a
user makes (add stores, replace/delete/touch/get/in/len say "absent"), and
a flight whose owner is dead or whose lease ended is removed by eviction
and sweeps, so a crashed computation never pins memory nor makes an
evicting cache refuse writes.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time

import pytest

import herdcache

KEYS = [f"dead:{i}" for i in range(50)]
CONTROL = "dead:control"


def took_over(cache: herdcache.Cache, key: str) -> bool:
    """Begin a flight on key: True if it took over another's flight, False
    if the key held none (the internal item is invisible to lookups)."""
    outcome = cache._flight_begin(key, 3600.0)
    assert outcome[0] == "compute", outcome
    return outcome[-1]


def begin_flights_and_die(cache: herdcache.Cache, keys: list[str]) -> None:
    """Child (forked): start a flight on each key, then die without ending
    any (os._exit runs no atexit handler: the owner is simply gone)."""
    for key in keys:
        assert cache._flight_begin(key, 3600.0)[0] == "compute"
    os._exit(0)


@pytest.fixture
def dead_flights():
    """An anonymous 2 MiB evicting cache whose KEYS hold dead flights."""
    cache = herdcache.Cache(size="2MiB")
    child = multiprocessing.get_context("fork").Process(target=begin_flights_and_die, args=(cache, KEYS + [CONTROL]))
    child.start()
    child.join(60)
    assert child.exitcode == 0, f"the flight-starting child ended with {child.exitcode}"
    assert took_over(cache, CONTROL), "the child's flights are not there"
    yield cache
    cache.close()


def test_a_dead_flight_is_absent_to_every_user_operation(dead_flights: herdcache.Cache) -> None:
    """get/in/len see nothing; replace, delete and touch say absent (and
    touch gives the flight no expiry); add stores."""
    cache = dead_flights
    key = KEYS[0]
    assert cache.get(key) is None and key not in cache and len(cache) == 0
    assert cache.replace(key, 1) is False
    assert cache.touch(key, 60) is False
    assert cache.delete(KEYS[1]) is False
    assert cache.add(key, "added") is True
    assert cache[key] == "added"
    cache.check()


def lease_over_flights(cache: herdcache.Cache, keys: list[str]) -> None:
    """Start a flight on each key with a 1 ms lease, in this (live)
    process, and return once every lease has ended."""
    for key in keys:
        assert cache._flight_begin(key, 0.001)[0] == "compute"
    ended = time.monotonic() + 0.002
    while time.monotonic() < ended:  # a clock deadline, not a guess at a duration
        time.sleep(0.001)


@pytest.mark.parametrize("owner", ["dead", "lease over"])
def test_abandoned_flights_are_evicted_and_never_make_sets_fail(dead_flights: herdcache.Cache, owner: str) -> None:
    """Writing ten times the cache's size evicts every abandoned flight,
    and no set raises CacheFull."""
    cache = dead_flights
    keys = KEYS
    if owner == "lease over":
        keys = [f"late:{i}" for i in range(50)]
        lease_over_flights(cache, keys)
    value = b"v" * 1000
    for i in range(20000):
        cache.set(f"filler:{i}", value)
    left = [key for key in keys if took_over(cache, key)]
    assert left == [], f"{len(left)} abandoned flights survived 20,000 evicting sets"
    cache.check()


def test_live_flights_never_make_an_evicting_cache_refuse_writes() -> None:
    """40 keys in flight (owner alive, lease long) are spared by eviction,
    yet sets and get_or_compute of values of every size up to 300 kB in a
    2 MiB evicting cache all succeed: eviction finds room around them
    (issue 9, defect 4)."""
    rng = random.Random(9)
    with herdcache.Cache(size="2MiB") as cache:
        rounds = []
        for i in range(400):
            if i % 10 == 0:  # flights scattered among the values
                outcome = cache._flight_begin(f"computing:{i // 10}", 3600.0)
                assert outcome[0] == "compute", outcome
                rounds.append(outcome[3])
            cache.set(f"set:{i}", b"s" * rng.randrange(1, 300_000))
        for i in range(200):
            size = rng.randrange(1, 300_000)
            assert len(cache.get_or_compute(f"goc:{i}", lambda size=size: b"g" * size)) == size
        published = [cache._flight_publish(f"computing:{i}", b"d", cache._tag, None, r) for i, r in enumerate(rounds)]
        assert all(published), "a live flight was evicted (its publish was refused)"
        cache.check()


def test_cachefull_says_why_and_never_repeats_an_earlier_calls_detail(segment_name: str) -> None:
    """A full cache without eviction says so when get_or_compute cannot
    store its result; the detail of an earlier, handled failure of this
    thread (opening found no segment, then created it) never leaks in."""
    with herdcache.Cache(segment_name, size="2MiB", evict=False) as cache:

        def fill() -> None:
            with pytest.raises(herdcache.errors.CacheFull):
                for i in range(1000):
                    cache.set(f"k:{i}", b"x" * 50_000)

        filler = threading.Thread(target=fill)
        filler.start()
        filler.join()
        with pytest.raises(herdcache.errors.CacheFull) as info:
            cache.get_or_compute("big", lambda: b"y" * 200_000)
    message = str(info.value)
    assert "eviction is off" in message and "no segment" not in message, message
