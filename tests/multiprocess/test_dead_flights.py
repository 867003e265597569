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
import time

import pytest

import herdcache

KEYS = [f"dead:{i}" for i in range(50)]
CONTROL = "dead:control"


def took_over(cache: herdcache.Cache, key: str) -> bool:
    """Begin a flight on key: True if it took over another's flight, False
    if the key held none (the internal item is invisible to lookups)."""
    outcome = cache._core.flight_begin(key, 3600.0)
    assert outcome[0] == "compute", outcome
    return outcome[-1]


def begin_flights_and_die(cache: herdcache.Cache, keys: list[str]) -> None:
    """Child (forked): start a flight on each key, then die without ending
    any (os._exit runs no atexit handler: the owner is simply gone)."""
    for key in keys:
        assert cache._core.flight_begin(key, 3600.0)[0] == "compute"
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
        assert cache._core.flight_begin(key, 0.001)[0] == "compute"
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
