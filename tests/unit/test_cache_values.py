"""Values and keys at the edges, one process: what msgpack (the default)
gives back, what is refused and how (before anything is written), and that
a value from another serializer, or hostile bytes planted in the segment,
is refused rather than decoded (RELIABILITY scenarios 25 and 26).
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import os
import pickle
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cache_helpers import same

from herdcache import Cache, errors
from herdcache.serializers import TAG_MSGPACK, MsgpackSerializer, get_serializer


@pytest.fixture
def cache() -> Iterator[Cache]:
    """An anonymous msgpack cache."""
    with Cache(size="8MiB") as opened:
        yield opened


ROUND_TRIPS = {
    "tuple": (1, 2),
    "list": [1, 2],
    "nested tuples and lists": [(1, [2, (3,)]), ((),)],
    "bytes": b"\x00\xffbytes",
    "str": "str with ünïcode",
    "bytes and str apart": {"b": b"x", "s": "x", b"k": "bytes key"},
    "int keys": {1: "one", -2: "minus two"},
    "int64 bounds": [2**63 - 1, -(2**63), 2**64 - 1, 0],
    "scalars": [None, True, False, 1.5, -0.0, float("inf")],
    "naive datetime": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "aware datetime, UTC": dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
    "aware datetime, +05:30": dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(13, 14, 15, 16),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "set": {1, "a", (2, 3)},
    "empty set": set(),
    "frozenset": frozenset({b"x", 2}),
    "decimal": decimal.Decimal("1.10"),
    "negative decimal": decimal.Decimal("-3.14159265358979323846264338327950288"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"when": [dt.date(2020, 1, 1), (dt.timedelta(seconds=1),)], "ids": frozenset({uuid.UUID(int=7)})},
}


@pytest.mark.parametrize("value", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_msgpack_gives_back_what_went_in(cache: Cache, value: Any) -> None:
    """With the default serializer a value comes back with its types:
    tuples stay tuples, bytes stay bytes, datetimes keep their tzinfo..."""
    cache["v"] = value
    assert same(cache["v"], value), f"{cache['v']!r} is not {value!r}"


class Colour(enum.IntEnum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Point(1, 2), (1, 2)),
        (Colour.RED, 1),
        (collections.OrderedDict(a=1), {"a": 1}),
        ([Point(1, (Colour.RED,))], [(1, (1,))]),
    ],
    ids=["namedtuple", "IntEnum", "OrderedDict", "nested"],
)
def test_msgpack_stores_subclasses_as_their_base_type(cache: Cache, value: Any, expected: Any) -> None:
    """Subclasses of the plain types (namedtuple, IntEnum, OrderedDict) come
    back as their base type, as documented."""
    cache["v"] = value
    assert same(cache["v"], expected)


# -- refused values and keys: nothing written ----------------------------------------------


def assert_nothing_written(cache: Cache, before: dict[str, Any]) -> None:
    """The cache is as it was: same entries, no set counted, invariants hold."""
    after = cache.stats()
    assert after["entries"] == before["entries"]
    assert after["sets"] == before["sets"]
    assert len(cache) == before["entries"]
    cache.check()


@pytest.mark.parametrize(
    "value",
    [object(), {1, object()}, {"k": [object()]}, 2**64, -(2**63) - 1, {object(): 1}],
    ids=["object", "in a set", "nested", "too big an int", "too small an int", "object key"],
)
def test_an_unserializable_value_is_refused_and_nothing_stored(cache: Cache, value: Any) -> None:
    """A value msgpack cannot store raises SerializationError (a TypeError)
    from set, add and replace, and the cache is left as it was."""
    cache["present"] = 1
    before = cache.stats()
    for store in (cache.set, cache.add, cache.replace):
        with pytest.raises(errors.SerializationError) as info:
            store("present" if store is cache.replace else "k", value)
        assert isinstance(info.value, TypeError)
    assert "k" not in cache
    assert cache["present"] == 1
    assert_nothing_written(cache, before)


@pytest.mark.parametrize("key", ["", b""], ids=["empty str", "empty bytes"])
def test_an_empty_key_is_refused_before_any_write(cache: Cache, key: Any) -> None:
    """Keys have 1 byte or more: an empty one raises ValueTooLarge (a
    ValueError) from every operation, and nothing is written."""
    cache["present"] = 1
    before = cache.stats()
    operations = [
        lambda: cache.set(key, 1),
        lambda: cache.add(key, 1),
        lambda: cache.replace(key, 1),
        lambda: cache.set_many({key: 1}),
        lambda: cache.get(key),
        lambda: cache[key],
        lambda: key in cache,
        lambda: cache.delete(key),
        lambda: cache.touch(key, 5),
    ]
    for operation in operations:
        with pytest.raises(errors.ValueTooLarge) as info:
            operation()
        assert isinstance(info.value, ValueError)
    assert_nothing_written(cache, before)


@pytest.mark.parametrize("key", [1, 1.5, None, ("k",), bytearray(b"k"), memoryview(b"k")])
def test_a_key_that_is_not_str_or_bytes_is_a_typeerror(cache: Cache, key: Any) -> None:
    """Only str and bytes are keys: anything else raises TypeError, from
    every operation, and nothing is written."""
    before = cache.stats()
    operations = [
        lambda: cache.set(key, 1),
        lambda: cache.get(key),
        lambda: cache[key],
        lambda: cache.delete(key),
        lambda: cache.touch(key, 5),
        lambda: key in cache,
    ]
    for operation in operations:
        with pytest.raises(TypeError):
            operation()
    assert_nothing_written(cache, before)


@pytest.mark.parametrize("value", ["text", 5, None, [b"x"]], ids=["str", "int", "None", "list"])
def test_the_raw_serializer_refuses_anything_but_bytes(value: Any) -> None:
    """serializer='raw' stores bytes-like values only; anything else is a
    SerializationError naming the type, and nothing is written."""
    with Cache(size="8MiB", serializer="raw") as cache:
        with pytest.raises(errors.SerializationError, match=type(value).__name__):
            cache["k"] = value
        assert "k" not in cache


def test_a_value_over_max_value_size_is_refused() -> None:
    """A serialized value larger than max_value_size raises ValueTooLarge;
    one of exactly that size is stored."""
    with Cache(size="8MiB", serializer="raw", max_value_size=1000) as cache:
        cache["fits"] = b"x" * 1000
        before = cache.stats()
        with pytest.raises(errors.ValueTooLarge):
            cache["big"] = b"x" * 1001
        assert_nothing_written(cache, before)
        assert cache["fits"] == b"x" * 1000


def test_max_value_size_is_bounded_by_the_cache() -> None:
    """A small cache lowers max_value_size to what it can hold, says so in
    stats(), and refuses a larger value before writing anything."""
    with Cache(size="8MiB", serializer="raw", max_value_size="64MiB") as cache:
        limit = cache.stats()["max_value_size"]
        assert 0 < limit < cache.stats()["bytes_capacity"]
        cache["largest"] = b"x" * limit
        before = cache.stats()
        with pytest.raises(errors.ValueTooLarge):
            cache["too big"] = b"x" * (limit + 1)
        assert_nothing_written(cache, before)
        assert cache["largest"] == b"x" * limit


# -- values from another serializer, and planted bytes ---------------------------------------


class PlantedPickle:
    """Unpickling this creates the directory ``path``: a stand-in for any
    code a pickle can run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def named_pair(segment_name: str) -> Iterator[tuple[Cache, Cache, Cache]]:
    """Three handles on one named cache: msgpack, pickle and raw."""
    handles = [Cache(segment_name, "8MiB", serializer=name) for name in ("msgpack", "pickle", "raw")]
    yield handles[0], handles[1], handles[2]
    for handle in handles:
        handle.close()


def test_a_pickled_value_is_never_unpickled_by_a_msgpack_cache(
    named_pair: tuple[Cache, Cache, Cache], tmp_path: Path
) -> None:
    """A value written with serializer='pickle' is refused with
    SerializationError by a msgpack cache on the same segment (by get, [],
    in, get_many and incr), and the code it carries never runs."""
    mcache, pcache, _ = named_pair
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(PlantedPickle(control)))
    assert control.exists(), "the planted payload must be able to run"

    canary = tmp_path / "canary"
    pcache["planted"] = PlantedPickle(canary)
    assert not canary.exists()
    for read in (
        lambda: mcache.get("planted"),
        lambda: mcache["planted"],
        lambda: "planted" in mcache,
        lambda: mcache.get_many(["planted"]),
        lambda: mcache.incr("planted"),
    ):
        with pytest.raises(errors.SerializationError):
            read()
    assert not canary.exists()


def test_pickle_bytes_planted_as_msgpack_never_run(cache: Cache, tmp_path: Path) -> None:
    """Pickle bytes written into the segment under msgpack's own tag (as a
    hostile writer could) are decoded as msgpack, never unpickled: get
    raises SerializationError and the payload does not run (scenario 25)."""
    canary = tmp_path / "canary"
    payload = pickle.dumps(PlantedPickle(canary), protocol=pickle.HIGHEST_PROTOCOL)
    cache._store("planted", payload, TAG_MSGPACK)
    with pytest.raises(errors.SerializationError):
        cache.get("planted")
    assert not canary.exists()


def test_a_value_from_another_serializer_is_refused_by_incr(named_pair: tuple[Cache, Cache, Cache]) -> None:
    """incr refuses, like get, a value written by another serializer, even
    one whose bytes happen to decode (raw b'\\x05' is msgpack's 5)."""
    mcache, _, rcache = named_pair
    rcache["n"] = b"\x05"
    with pytest.raises(errors.SerializationError):
        mcache.incr("n")
    assert rcache["n"] == b"\x05"


HOSTILE = {
    "str32 of 4 GiB": b"\xdb\xff\xff\xff\xff",
    "bin32 of 4 GiB": b"\xc6\xff\xff\xff\xff",
    "array32 of 4 G": b"\xdd\xff\xff\xff\xff",
    "map32 of 4 G": b"\xdf\xff\xff\xff\xff",
    "ext32 of 4 GiB": b"\xc9\xff\xff\xff\xff\x01",
    "truncated": b"\x92\x01",
    "reserved byte": b"\xc1",
    "trailing bytes": b"\x01\x02",
    "bad utf-8": b"\xa2\xff\xfe",
    "bad tuple ext": b"\xd4\x01\xc1",
    "bad datetime ext": b"\xd5\x02no",
    "bad uuid ext": b"\xd4\x09\x00",
}


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
def test_msgpack_refuses_hostile_bytes_without_allocating(data: bytes) -> None:
    """Decoding forged msgpack (a 4 GiB length prefix, truncation, a bad
    extension) raises SerializationError and never allocates the claimed
    length (scenario 25)."""
    serializer = MsgpackSerializer()
    tracemalloc.start()
    try:
        with pytest.raises(errors.SerializationError):
            serializer.loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"decoding {len(data)} bytes allocated {peak} bytes"


def test_hostile_bytes_in_the_segment_are_refused(named_pair: tuple[Cache, Cache, Cache]) -> None:
    """Hostile bytes stored by a raw writer are refused by a msgpack reader
    (the tags differ), and the same bytes planted under msgpack's tag are
    refused by its decoder: SerializationError either way, nothing decoded."""
    mcache, _, rcache = named_pair
    rcache["hostile"] = HOSTILE["str32 of 4 GiB"]
    with pytest.raises(errors.SerializationError):
        mcache.get("hostile")
    mcache._store("planted", HOSTILE["str32 of 4 GiB"], TAG_MSGPACK)
    with pytest.raises(errors.SerializationError):
        mcache.get("planted")
    mcache.check()


def test_the_serializer_spec_is_checked() -> None:
    """An unknown serializer name is a ValueError, an object without
    dumps/loads a TypeError, and a custom serializer that returns something
    other than bytes is refused with SerializationError."""
    with pytest.raises(ValueError, match="unknown serializer"):
        get_serializer("yaml")
    with pytest.raises(TypeError):
        get_serializer(42)

    class Textual:
        def dumps(self, obj: Any) -> Any:
            return str(obj)

        def loads(self, data: bytes) -> Any:
            return data.decode()

    with Cache(size="8MiB", serializer=Textual()) as cache:
        with pytest.raises(errors.SerializationError, match="not bytes"):
            cache["k"] = 1
        assert "k" not in cache


# -- damaged extension bytes: every decode path says SerializationError (issue 9, defect 10)

DAMAGED = {
    "decimal that is not a number": msgpack.packb(msgpack.ExtType(8, b"1.2.3"), use_bin_type=True),
    "timedelta out of range": msgpack.packb(msgpack.ExtType(5, msgpack.packb([10**12, 0, 0])), use_bin_type=True),
    "timedelta of strings": msgpack.packb(msgpack.ExtType(5, msgpack.packb(["a", "b"])), use_bin_type=True),
    "date out of range": msgpack.packb(msgpack.ExtType(3, b"99999-01-01"), use_bin_type=True),
    "uuid of 3 bytes": msgpack.packb(msgpack.ExtType(9, b"abc"), use_bin_type=True),
    "set of a dict": msgpack.packb(msgpack.ExtType(6, msgpack.packb([{}])), use_bin_type=True),
}


DECODE_PATHS = {
    "get": lambda cache: cache.get("damaged"),
    "get_or_compute": lambda cache: cache.get_or_compute("damaged", lambda: 1),
    "incr": lambda cache: cache.incr("damaged"),
    "get_many": lambda cache: cache.get_many(["damaged"]),
}


@pytest.mark.parametrize("path", DECODE_PATHS.values(), ids=DECODE_PATHS.keys())
@pytest.mark.parametrize("data", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_extension_bytes_raise_serializationerror_on_every_path(cache: Cache, data: bytes, path: Any) -> None:
    """Every decode path raises SerializationError, never
    decimal.InvalidOperation or OverflowError."""
    cache._store("damaged", data, TAG_MSGPACK)
    with pytest.raises(errors.SerializationError):
        path(cache)
    with pytest.raises(errors.SerializationError):
        MsgpackSerializer().loads(data)


def test_a_custom_serializers_decode_failure_is_a_serializationerror() -> None:
    """A user's loads() that raises is reported as SerializationError (with
    the user's exception as its cause), like a failing dumps()."""

    class Broken:
        def dumps(self, obj: Any) -> bytes:
            return b"x"

        def loads(self, data: bytes) -> Any:
            raise ZeroDivisionError("broken")

    with Cache(size="8MiB", serializer=Broken()) as cache:
        cache["k"] = 1
        with pytest.raises(errors.SerializationError) as info:
            cache.get_or_compute("k", lambda: 2)
        assert isinstance(info.value.__cause__, ZeroDivisionError)


class RefusesPickling:
    """Raises pickle.PickleError when pickled (as Django's tests' Unpicklable)."""

    def __getstate__(self) -> Any:
        raise pickle.PickleError("not today")


@pytest.mark.parametrize("value", [lambda: None, RefusesPickling()], ids=["lambda", "raises PickleError"])
def test_an_unpicklable_value_is_a_picklingerror(value: Any) -> None:
    """serializer="pickle" refuses what pickle cannot store with an error
    that is both a SerializationError and a pickle.PicklingError (what
    Django's callers catch), and stores nothing."""
    with Cache(size="8MiB", serializer="pickle") as cache:
        with pytest.raises(errors.UnpicklableValue) as info:
            cache["k"] = value
        assert isinstance(info.value, pickle.PicklingError)
        assert isinstance(info.value, errors.SerializationError)
        assert "k" not in cache
