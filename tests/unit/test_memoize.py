"""@cache.memoize: functools.lru_cache shared by every process of a host.

What users rely on: a call's cache key is the same in every process (so a
result computed in one is found by all), however the arguments are
spelled (positional, keyword, defaults); ``self``/``cls`` are left out of
the key unless the instance defines ``__cache_key__``; functions, methods,
staticmethods, classmethods and coroutine functions all work; ``key=``
replaces the key; ``invalidate``, ``cache_clear``, ``cache_info`` and
``__wrapped__`` behave like lru_cache's; arguments that cannot make a key
raise a TypeError that says what to do.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import subprocess
import sys

import _memo_subjects
import pytest

import herdcache


@pytest.fixture
def cache(segment_name: str):
    cache = herdcache.Cache(segment_name, size="4MiB")
    yield cache
    cache.close()


def counted(fn):
    """fn, counting its calls in fn.calls."""

    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)

    wrapper.calls = 0
    wrapper.__name__ = wrapper.__qualname__ = fn.__name__
    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


# -- keys ------------------------------------------------------------------


def test_a_call_has_the_same_key_in_a_spawned_process(cache) -> None:
    """A spawned process (another interpreter, another hash seed) builds
    the same key for the same call."""
    call = (("X1",), {"currency": "USD", "rounding": 0})
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        theirs = pool.apply(_memo_subjects.key_in_this_process, (cache.name, *call))
    assert theirs == cache.memoize(ttl=60)(_memo_subjects.price).cache_key(*call[0], **call[1])


SET_KEY_PROGRAM = """
import sys, herdcache, _memo_subjects
cache = herdcache.Cache(sys.argv[1])
price = cache.memoize(ttl=60)(_memo_subjects.price)
print(price.cache_key(frozenset(f"sku-{i}" for i in range(40)), currency={"EUR", "USD", "GBP", "CHF"}))
"""


def test_set_arguments_have_one_key_whatever_the_hash_seed(cache) -> None:
    """Sets iterate in an order that depends on the process's string hash
    seed; the key must not: two interpreters with different
    PYTHONHASHSEED build the same key for equal sets."""
    keys = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", SET_KEY_PROGRAM, cache.name], env=env, capture_output=True, text=True, check=True
        )
        keys.add(out.stdout.strip())
    assert len(keys) == 1


def test_equal_dict_and_keyword_arguments_have_one_key(cache) -> None:
    """Dicts equal but built in another order, and **kwargs passed in
    another order, are the same call; sets, frozensets and lists of the
    same members stay different arguments."""
    price = cache.memoize(ttl=60)(_memo_subjects.price)
    assert price.cache_key("X1", currency={"a": 1, "b": {"x": 1, "y": 2}}) == price.cache_key(
        "X1", currency={"b": {"y": 2, "x": 1}, "a": 1}
    )
    tagged = cache.memoize(ttl=60)(lambda sku, **labels: labels)
    assert tagged.cache_key("X1", color="red", size=9) == tagged.cache_key("X1", size=9, color="red")
    assert len({price.cache_key({1, 2}), price.cache_key(frozenset({1, 2})), price.cache_key([1, 2])}) == 3


def test_positional_keyword_and_default_spellings_are_one_call(cache) -> None:
    """price("X1"), price("X1", "EUR"), price(sku="X1"),
    price("X1", currency="EUR", rounding=2) are one key and one
    computation; other values are other keys."""
    fn = counted(_memo_subjects.price)
    price = cache.memoize(ttl=60)(fn)
    spellings = [
        ((("X1",), {})),
        ((("X1", "EUR"), {})),
        (((), {"sku": "X1"})),
        ((("X1",), {"currency": "EUR", "rounding": 2})),
    ]
    assert len({price.cache_key(*a, **k) for a, k in spellings}) == 1
    results = [price(*a, **k) for a, k in spellings]
    assert results == [{"sku": "X1", "currency": "EUR", "rounding": 2}] * 4
    assert fn.calls == 1
    others = {price.cache_key("X2"), price.cache_key("X1", "USD"), price.cache_key("X1", rounding=3)}
    assert len(others) == 3 and price.cache_key("X1") not in others


def test_keys_name_the_function_and_tuples_differ_from_lists(cache) -> None:
    """Two functions never share a key; (1, 2) and [1, 2] are different
    arguments, as the serializer keeps them apart."""

    def first(x):
        return x

    def second(x):
        return x

    a, b = cache.memoize()(first), cache.memoize()(second)
    assert a.cache_key(1) != b.cache_key(1)
    where = f"{__name__}.{test_keys_name_the_function_and_tuples_differ_from_lists.__qualname__}.<locals>"
    assert a.cache_key(1).startswith(f"{where}.first:")
    assert a.cache_key((1, 2)) != a.cache_key([1, 2])


def test_unhashable_arguments_are_fine_but_unserializable_ones_raise_type_error(cache) -> None:
    """Lists and dicts make keys (by value); an object the serializer
    cannot store raises a TypeError naming the function and the way out
    (key=), and nothing is computed."""
    fn = counted(lambda rows: len(rows))
    total = cache.memoize(ttl=60)(fn)
    assert total([1, 2, {"a": 3}]) == 3
    assert total([1, 2, {"a": 3}]) == 3
    assert fn.calls == 1
    with pytest.raises(TypeError, match=r"cannot build a cache key for .*<lambda>.*key="):
        total(object())
    assert fn.calls == 1


def test_custom_key_replaces_the_arguments(cache) -> None:
    """key= decides which calls are one: here currency is ignored; a key=
    that returns something else than a str is a TypeError."""
    fn = counted(_memo_subjects.price)
    price = cache.memoize(ttl=60, key=lambda sku, currency="EUR", **_: sku)(fn)
    assert price.cache_key("X1") == price.cache_key("X1", "USD")
    assert price("X1") == price("X1", "USD") == {"sku": "X1", "currency": "EUR", "rounding": 2}
    assert fn.calls == 1
    bad = cache.memoize(key=lambda sku: 42)(lambda sku: sku)
    with pytest.raises(TypeError, match="must return a str"):
        bad("X1")


# -- methods -------------------------------------------------------------------


def test_methods_leave_self_out_unless_cache_key_says_otherwise(cache) -> None:
    """All instances share a method's results; an instance defining
    __cache_key__ gets results of its own."""

    class Shop:
        calls = 0

        @cache.memoize(ttl=60)
        def price(self, sku):
            Shop.calls += 1
            return f"{sku}@{type(self).__name__}"

    class RegionalShop(Shop):
        def __init__(self, region):
            self.region = region

        def __cache_key__(self):
            return self.region

    assert Shop().price("X1") == Shop().price("X1") == "X1@Shop"
    assert Shop.calls == 1
    eu, us = RegionalShop("eu"), RegionalShop("us")
    assert eu.price("X1") == us.price("X1") == "X1@RegionalShop"
    assert Shop.calls == 3
    assert RegionalShop("eu").price("X1") == "X1@RegionalShop"
    assert Shop.calls == 3
    assert len({Shop().price.cache_key(Shop(), "X1"), eu.price.cache_key(eu, "X1"), us.price.cache_key(us, "X1")}) == 3


def test_staticmethods_and_classmethods_work_under_memoize(cache) -> None:
    """@staticmethod and @classmethod over @cache.memoize: computed once
    each, from the class and from instances; for a classmethod cls is left
    out of the key, even in a class whose instances define __cache_key__."""
    calls = []

    class Catalog:
        def __init__(self, region):
            self.region = region

        def __cache_key__(self):
            return self.region

        @staticmethod
        @cache.memoize(ttl=60)
        def tax(amount):
            calls.append("tax")
            return amount * 0.2

        @classmethod
        @cache.memoize(ttl=60)
        def currencies(cls, region):
            calls.append("currencies")
            return [cls.__name__, region]

    assert Catalog.tax(10) == Catalog("eu").tax(10) == 2.0
    assert Catalog.currencies("eu") == Catalog("us").currencies("eu") == ["Catalog", "eu"]
    assert calls == ["tax", "currencies"]


# -- coroutine functions -------------------------------------------------------------


def test_coroutine_functions_are_memoized_and_stay_coroutine_functions(cache) -> None:
    """An async def stays awaitable (and inspectable as such) and is
    computed once for equal calls."""
    calls = []

    @cache.memoize(ttl=60)
    async def fetch(url, timeout=5):
        calls.append(url)
        await asyncio.sleep(0)
        return {"url": url, "timeout": timeout}

    async def main():
        return [await fetch("/a"), await fetch("/a", 5), await fetch(url="/a"), await fetch("/b")]

    assert inspect.iscoroutinefunction(fetch)
    results = asyncio.run(main())
    assert results[:3] == [{"url": "/a", "timeout": 5}] * 3
    assert calls == ["/a", "/b"]
    assert fetch.cache_info()[:2] == (2, 2)


# -- lru_cache's companions ----------------------------------------------------------


def test_invalidate_clear_info_and_wrapped(cache) -> None:
    """invalidate(args) forgets that call only; cache_clear() forgets
    every result of this function (not others') and says how many;
    cache_info() counts this process's hits and misses and the stored
    results; __wrapped__ is the original function."""
    fn = counted(_memo_subjects.price)
    price = cache.memoize(ttl=60)(fn)
    other = cache.memoize(ttl=60)(lambda x: x)
    other(1)

    price("X1"), price("X2"), price("X1")
    assert price.cache_info() == (1, 2, None, 2)
    assert price.__wrapped__ is fn
    assert price.__name__ == "price"

    assert price.invalidate("X1", currency="EUR") is True
    assert price.invalidate("X1") is False
    price("X1"), price("X2")
    assert fn.calls == 3

    assert price.cache_clear() == 2
    assert price.cache_info() == (2, 3, None, 0)
    assert other.cache_info().currsize == 1
    price("X2")
    assert fn.calls == 4


# -- closures (issue 9, defect 8) ----------------------------------------------


def test_closures_of_one_factory_never_share_results(cache) -> None:
    """make_fetcher("a") and make_fetcher("b") have one qualified name; what
    they captured tells them apart, and each clears only its own results.
    A closure made again with the same captured value shares its results."""

    def make_fetcher(source: str):
        @cache.memoize(ttl=60)
        def fetch(item: int) -> str:
            return f"{source}:{item}"

        return fetch

    a, b, a_again = make_fetcher("a"), make_fetcher("b"), make_fetcher("a")
    assert [a(1), b(1), a_again(1)] == ["a:1", "b:1", "a:1"]
    assert a.cache_key(1) != b.cache_key(1)
    assert a.cache_key(1) == a_again.cache_key(1)
    assert b.cache_clear() == 1
    assert a(1) == "a:1" and a.cache_info().currsize == 1


def test_closures_capturing_functions_count_them_by_name(cache) -> None:
    """A decorator-made closure capturing the function it wraps keys by
    that function's name; a method using super() (a __class__ cell) works."""

    def through(fn):
        return cache.memoize()(lambda x: fn(x))

    double, square = through(lambda x: 2 * x), through(_memo_subjects.square)
    assert (double(3), square(3)) == (6, 9)

    class Base:
        def total(self, x):
            return x

    class Child(Base):
        @cache.memoize()
        def total(self, x):
            return super().total(x) + 1

    assert Child().total(1) == 2


def test_a_closure_capturing_what_cannot_be_a_key_is_refused_with_the_way_out(cache) -> None:
    """A captured value msgpack cannot encode is a TypeError at decoration
    time that points to key=; with key= the closure is the caller's to name."""
    lock = object()
    with pytest.raises(TypeError, match=r"'lock' holds a object.*key="):

        @cache.memoize()
        def guarded(x):
            return (lock, x)[1]

    keyed = cache.memoize(key=lambda x: f"guarded:{x}")(lambda x: (lock, x)[1])
    assert keyed(5) == 5
