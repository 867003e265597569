"""Fixtures of the tier's tests: a real redis-server and unique prefixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _fleet import until
from redis_server import HOW, RedisServer, available, server_binary

import herdcache

pytest.importorskip("redis", reason="the tier needs redis-py: pip install '.[test]'")

SERVERS = available()
if os.environ.get("HERDCACHE_REQUIRE_REDIS"):  # CI: these tests must run, on every kind
    missing = [f"{kind} ({how})" for kind, how in HOW.items() if kind not in SERVERS]
    if missing:
        raise RuntimeError(f"HERDCACHE_REQUIRE_REDIS is set but these servers are missing: {', '.join(missing)}")
if not SERVERS:
    pytest.skip(
        "no redis-server binary: apt-get install redis-server (CI installs it; "
        "HERDCACHE_REDIS_SERVER names another)",
        allow_module_level=True,
    )


@pytest.fixture(scope="session", params=sorted(SERVERS))
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """One server of each kind found (redis, redis-6.0, valkey) for the
    session's tests (each uses its own prefix): the tests that use it run
    against each."""
    server = RedisServer(SERVERS[request.param]).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may kill or pause it)."""
    server = RedisServer(server_binary()).start()
    yield server
    server.stop()


@pytest.fixture
def open_host(segdir: str, prefix: str) -> Iterator[Callable[..., herdcache.TieredCache]]:
    """A factory of TieredCaches ("hosts": an L1 each) on a given server,
    with this test's prefix, each tracking before it is returned; closed
    afterwards."""
    made: list[herdcache.TieredCache] = []

    def make(name: str, server: RedisServer, **kwargs: Any) -> herdcache.TieredCache:
        kwargs.setdefault("prefix", prefix)
        cache = herdcache.TieredCache(name, "4MiB", remote=server.client(), dir=segdir, **kwargs)
        made.append(cache)
        until(lambda: cache.tracking, f"host {name} tracking")
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def host(open_host: Callable[..., herdcache.TieredCache], redis_server: RedisServer) -> Callable[..., herdcache.TieredCache]:
    """open_host on the session's server (of each kind)."""
    return lambda name="a", **kwargs: open_host(name, redis_server, **kwargs)


@pytest.fixture
def prefix() -> str:
    """A fresh Redis key prefix."""
    return f"t{uuid.uuid4().hex[:10]}:"
