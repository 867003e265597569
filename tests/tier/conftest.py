"""Fixtures of the tier's tests: a real redis-server and unique prefixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from redis_server import RedisServer, server_binary

pytest.importorskip("redis", reason="the tier needs redis-py: pip install '.[test]'")
if server_binary() is None:
    if os.environ.get("HERDCACHE_REQUIRE_REDIS"):  # CI: these tests must run
        raise RuntimeError("HERDCACHE_REQUIRE_REDIS is set but there is no redis-server binary")
    pytest.skip(
        "no redis-server binary: apt-get install redis-server (CI installs it; "
        "HERDCACHE_REDIS_SERVER names another)",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session's tests (each uses its own prefix)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may kill or pause it)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh Redis key prefix."""
    return f"t{uuid.uuid4().hex[:10]}:"
