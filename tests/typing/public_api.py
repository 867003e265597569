"""Checked by ``mypy --strict`` (tests/unit/test_typing.py), never run: the
types a user of herdcache's public API gets.  ``assert_type`` fails the
check if a type is wrong; a ``type: ignore[code]`` that is not needed fails
it too (strict mode warns about unused ignores), so each one proves that
mypy catches that misuse."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import herdcache
from herdcache.memoize import CacheInfo

cache = herdcache.Cache("typed", size="64MiB", default_ttl=300)


def build_report() -> dict[str, int]:
    return {"rows": 3}


async def fetch_user() -> list[str]:
    return ["ada"]


@cache.memoize(ttl=60)
def price(sku: str, currency: str = "EUR") -> float:
    return 1.0


@cache.memoize(ttl=60)
async def aprice(sku: str) -> float:
    return 1.0


class Shop:
    @cache.memoize(ttl=60)
    def stock(self, sku: str) -> int:
        return 0


async def use_async() -> None:
    assert_type(await cache.aget_or_compute("user", fetch_user, ttl=5), list[str])
    assert_type(await aprice("X1"), float)


def use() -> None:
    # get_or_compute returns what the callable returns.
    assert_type(cache.get_or_compute("report", build_report, ttl=60), dict[str, int])
    assert_type(cache.get_or_compute(b"n", lambda: 42), int)
    # get: the default's type joins the (untyped) stored value's.
    assert_type(cache.get("k"), Any | None)
    assert_type(cache.get("k", 0), Any | int)
    # Keys are str or bytes.
    cache.set("k", 1)
    cache.set(b"k", 1)
    cache.set(1, 1)  # type: ignore[arg-type]
    cache.delete(("a", "b"))  # type: ignore[arg-type]
    assert_type(cache.keys(), list[str | bytes])
    # memoize keeps the signature and the return type.
    assert_type(price("X1"), float)
    assert_type(price("X1", currency="USD"), float)
    price(1)  # type: ignore[arg-type]
    price("X1", colour="red")  # type: ignore[call-arg]
    assert_type(price.invalidate("X1"), bool)
    assert_type(price.cache_key("X1", "EUR"), str)
    price.invalidate(sku=3)  # type: ignore[arg-type]
    assert_type(price.cache_clear(), int)
    assert_type(price.cache_info(), CacheInfo)
    # Methods: the result type survives the binding to an instance.
    assert_type(Shop().stock("X1"), int)
    assert_type(Shop().stock.invalidate("X1"), bool)
    # Counters, queues, segments.
    assert_type(cache.incr("n"), int | float)  # incr takes and returns floats too
    assert_type(cache.stats(), dict[str, Any])
    assert_type(cache.closed, bool)
