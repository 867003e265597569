"""Functions the memoize tests decorate, importable by a spawned process
(keys include the module and qualified name, so both sides must use the
same function)."""

from __future__ import annotations


def price(sku: str, currency: str = "EUR", *, rounding: int = 2) -> dict:
    """A pure function of its arguments."""
    return {"sku": sku, "currency": currency, "rounding": rounding}


def key_in_this_process(cache_name: str, args: tuple, kwargs: dict) -> str:
    """``price``'s cache key, built in whichever process calls this."""
    import herdcache

    cache = herdcache.Cache(cache_name)
    try:
        return cache.memoize(ttl=60)(price).cache_key(*args, **kwargs)
    finally:
        cache.close()


def square(x: int) -> int:
    """x squared (a module-level function a closure can capture)."""
    return x * x
