"""A ProcessPoolExecutor pipeline that shares one named cache under spawn.

Run it:  python examples/pool_pipeline.py

Thirty-two tasks ask for the weather of four cities; a lookup is slow
(0.2 s).  Four spawned workers share the cache ``example-pool-<pid>``:
it reaches them pickled by name through the pool's initializer, and
``get_or_compute`` makes each city's lookup run once for the whole pool,
while the workers that ask for it at the same moment wait for that one
result instead of calling the slow service themselves.  Under spawn (and
forkserver, Linux's default from Python 3.14) a child inherits nothing,
so the cache must have a name; an anonymous one refuses to pickle.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import herdcache

CITIES = ["Lisbon", "Oslo", "Quito", "Perth"]

_cache: herdcache.Cache | None = None


def slow_weather(city: str) -> dict[str, object]:
    """Stands for a slow remote call."""
    time.sleep(0.2)
    return {"city": city, "celsius": len(city) * 3, "looked_up_by": os.getpid()}


def init_worker(cache: herdcache.Cache) -> None:
    """Runs once in each worker: keep the cache the pool handed over."""
    global _cache
    _cache = cache


def weather(city: str) -> dict[str, object]:
    """A task: the city's weather, looked up once for the whole pool."""
    assert _cache is not None
    return _cache.get_or_compute(f"weather:{city}", lambda: slow_weather(city), ttl=60)


def main() -> None:
    name = f"example-pool-{os.getpid()}"
    cache = herdcache.Cache(name, size="16MiB")
    try:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(4, mp_context=spawn, initializer=init_worker, initargs=(cache,)) as pool:
            results = list(pool.map(weather, CITIES * 8))
        stats = cache.stats()
        lookups = {city: {r["looked_up_by"] for r in results if r["city"] == city} for city in CITIES}
        print(f"tasks: {len(results)}")
        print(f"computations: {stats['computes']}")
        print(f"one lookup per city: {all(len(pids) == 1 for pids in lookups.values())}")
    finally:
        cache.close()
        herdcache.remove(name)


if __name__ == "__main__":
    main()
