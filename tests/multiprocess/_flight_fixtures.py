"""Fixtures of the single-flight tests: a cache per start method, and
troupes of puppets that are killed, whatever happens, when a test ends."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from _flightkit import CACHE_SIZE, START_METHODS, Troupe

import herdcache


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """How puppets start: fork (they inherit the cache) or spawn (they attach it by name)."""
    return request.param


@pytest.fixture
def flight_cache(start_method: str, segment_name: str) -> Iterator[herdcache.Cache]:
    """An anonymous cache for forked puppets, a named one for spawned puppets."""
    name = None if start_method == "fork" else segment_name
    cache = herdcache.Cache(name, size=CACHE_SIZE)
    yield cache
    cache.close()


@pytest.fixture
def troupe(start_method: str, flight_cache: herdcache.Cache) -> Iterator[Callable[..., Troupe]]:
    """``troupe(key, **options)``: puppets of ``start_method`` asking ``flight_cache`` for key."""
    made: list[Troupe] = []

    def make(key: str, **options: object) -> Troupe:
        made.append(Troupe(start_method, flight_cache, key, **options))
        return made[-1]

    yield make
    for t in made:
        t.close()
