"""The contract of :class:`herdcache.Cache`, one process, run for every
configuration a user can open: anonymous and named segments, times the
msgpack, pickle, raw and a custom (JSON) serializer.  In cachetools'
manner, one suite holds for every configuration; what differs between
serializers (raw stores bytes only, so no integers) comes from the
:class:`~cache_helpers.Config`.

Expiry is observed by polling ``key in cache`` until a deadline, never by
sleeping a fixed time, and no test asserts how long anything took.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cache_helpers import CONFIGS, Config
from helpers import wait_until

from herdcache import FOREVER, Cache, errors

CACHE_SIZE = "32MiB"  # several stripes


@pytest.fixture(params=CONFIGS, ids=lambda config: config.id)
def config(request: pytest.FixtureRequest) -> Config:
    """One configuration of the contract."""
    return request.param


@pytest.fixture
def cache(config: Config, segment_name: str) -> Iterator[Cache]:
    """A fresh cache of ``config``."""
    opened = Cache(segment_name if config.named else None, CACHE_SIZE, serializer=config.serializer())
    yield opened
    opened.close()


@pytest.fixture
def reopen(config: Config, cache: Cache, segment_name: str) -> Iterator[Callable[..., Cache]]:
    """Open another handle on the same cache with other options (by name
    for a named cache: a second mapping of the segment)."""
    handles: list[Cache] = []

    def open_handle(**options: Any) -> Cache:
        if config.named:
            handle = Cache(segment_name, serializer=config.serializer(), **options)
        else:
            handle = Cache(segment=cache.segment, serializer=config.serializer(), **options)
        handles.append(handle)
        return handle

    yield open_handle
    for handle in handles:
        handle.close()


def unserializable() -> Any:
    """A value no serializer under test can store (a local function)."""
    return lambda: None


# -- get / set / delete ------------------------------------------------------------


def test_set_then_get_returns_an_equal_value(cache: Cache, config: Config) -> None:
    """What was set is what get returns, through every spelling."""
    cache.set("a", config.value(1))
    cache["b"] = config.value(2)
    assert cache.get("a") == config.value(1)
    assert cache["a"] == config.value(1)
    assert cache.get("b") == config.value(2)


def test_set_overwrites(cache: Cache, config: Config) -> None:
    """A second set of a key replaces its value."""
    cache["k"] = config.value(1)
    cache["k"] = config.value(2)
    assert cache["k"] == config.value(2)
    assert len(cache) == 1


def test_absent_key_get_returns_default(cache: Cache) -> None:
    """get of an absent key returns None, or the default given."""
    sentinel = object()
    assert cache.get("absent") is None
    assert cache.get("absent", sentinel) is sentinel


def test_absent_key_getitem_raises_keyerror(cache: Cache) -> None:
    """cache[key] of an absent key raises KeyError naming the key."""
    with pytest.raises(KeyError, match="absent"):
        cache["absent"]


def test_delitem(cache: Cache, config: Config) -> None:
    """del removes a present key and raises KeyError for an absent one."""
    cache["k"] = config.value(1)
    del cache["k"]
    assert "k" not in cache
    with pytest.raises(KeyError):
        del cache["k"]


def test_delete_says_whether_the_key_was_there(cache: Cache, config: Config) -> None:
    """delete returns True once, then False."""
    cache["k"] = config.value(1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_add_stores_only_if_absent(cache: Cache, config: Config) -> None:
    """add stores an absent key and leaves a present one alone."""
    assert cache.add("k", config.value(1)) is True
    assert cache.add("k", config.value(2)) is False
    assert cache["k"] == config.value(1)


def test_replace_stores_only_if_present(cache: Cache, config: Config) -> None:
    """replace leaves an absent key absent and replaces a present one."""
    assert cache.replace("k", config.value(1)) is False
    assert "k" not in cache
    cache["k"] = config.value(1)
    assert cache.replace("k", config.value(2)) is True
    assert cache["k"] == config.value(2)


# -- the mapping views ---------------------------------------------------------------


def test_contains_len_and_iteration(cache: Cache, config: Config) -> None:
    """`in`, len() and iteration agree with what was stored."""
    stored = {f"key-{i}": config.value(i) for i in range(50)}
    for key, value in stored.items():
        cache[key] = value
    assert len(cache) == 50
    assert all(key in cache for key in stored)
    assert "key-50" not in cache
    assert sorted(cache) == sorted(stored)
    assert sorted(cache.keys()) == sorted(stored)
    assert dict(cache.items()) == stored


def test_mutable_mapping_mixins(cache: Cache, config: Config) -> None:
    """update, pop and setdefault behave as on a dict."""
    cache.update({"a": config.value(1), "b": config.value(2)})
    assert cache.pop("a") == config.value(1)
    assert cache.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        cache.pop("a")
    assert cache.setdefault("b", config.value(9)) == config.value(2)
    assert cache.setdefault("c", config.value(3)) == config.value(3)
    assert sorted(cache) == ["b", "c"]


def test_str_and_bytes_keys_that_encode_alike_are_one_key(cache: Cache, config: Config) -> None:
    """A str key and the bytes of its UTF-8 encoding name the same entry."""
    cache["café"] = config.value(1)
    assert cache["café".encode()] == config.value(1)
    cache["café".encode()] = config.value(2)
    assert cache["café"] == config.value(2)
    assert len(cache) == 1
    assert list(cache) == ["café"]
    del cache["café".encode()]
    assert "café" not in cache


def test_keys_that_are_not_utf8_iterate_as_bytes(cache: Cache, config: Config) -> None:
    """A bytes key that is not valid UTF-8 comes back from iteration as bytes."""
    cache[b"\xff\x00"] = config.value(1)
    cache["text"] = config.value(2)
    assert sorted(cache, key=repr) == sorted([b"\xff\x00", "text"], key=repr)


def test_longest_key_is_accepted(cache: Cache, config: Config) -> None:
    """Keys of 1 and of 250 bytes (the documented bounds) are accepted."""
    for key in ("x", "k" * 250, "é" * 125):
        cache[key] = config.value(len(key))
        assert cache[key] == config.value(len(key))


# -- many at once -----------------------------------------------------------------------


def test_get_many_returns_only_present_keys(cache: Cache, config: Config) -> None:
    """get_many is a dict of the present keys among those asked for."""
    cache.set_many({"a": config.value(1), "b": config.value(2)})
    assert cache.get_many(["a", "b", "c"]) == {"a": config.value(1), "b": config.value(2)}
    assert cache.get_many([]) == {}


def test_delete_many_counts_the_removed(cache: Cache, config: Config) -> None:
    """delete_many removes the keys and says how many were there."""
    cache.set_many({"a": config.value(1), "b": config.value(2), "c": config.value(3)})
    assert cache.delete_many(["a", "b", "x"]) == 2
    assert list(cache) == ["c"]


def test_set_many_with_a_bad_value_stores_nothing(cache: Cache, config: Config) -> None:
    """set_many serializes every value before storing any: one bad value
    means SerializationError and not one key stored."""
    with pytest.raises(errors.SerializationError):
        cache.set_many({"a": config.value(1), "b": unserializable(), "c": config.value(3)})
    assert len(cache) == 0
    cache.check()


def test_set_many_applies_the_ttl(cache: Cache, config: Config) -> None:
    """set_many's ttl applies to every key."""
    cache.set_many({"a": config.value(1), "b": config.value(2)}, ttl=100)
    assert 0 < cache.ttl("a") <= 100
    assert 0 < cache.ttl("b") <= 100


def test_clear_removes_every_key_for_every_handle(cache: Cache, config: Config, reopen: Callable[..., Cache]) -> None:
    """clear empties the cache, as every handle on it sees."""
    other = reopen()
    cache.set_many({f"k{i}": config.value(i) for i in range(100)})
    assert len(other) == 100
    other.clear()
    assert len(cache) == 0
    assert list(cache) == []
    assert cache.get("k1") is None
    cache.check()


# -- ttl ------------------------------------------------------------------------------------


def test_ttl_none_means_the_default_ttl(config: Config, reopen: Callable[..., Cache]) -> None:
    """Without a ttl a key lives default_ttl seconds, or forever if that is None."""
    timed = reopen(default_ttl=100)
    timed.set("timed", config.value(1))
    assert 0 < timed.ttl("timed") <= 100
    forever = reopen()
    forever.set("forever", config.value(2))
    assert forever.ttl("forever") is None


def test_forever_overrides_the_default_ttl(config: Config, reopen: Callable[..., Cache]) -> None:
    """ttl=FOREVER never expires, whatever the default."""
    timed = reopen(default_ttl=100)
    timed.set("k", config.value(1), ttl=FOREVER)
    assert timed.ttl("k") is None
    assert FOREVER == math.inf


def test_explicit_ttl_is_kept(cache: Cache, config: Config) -> None:
    """A key set with a ttl reports at most that many seconds left."""
    cache.set("k", config.value(1), ttl=50)
    assert 0 < cache.ttl("k") <= 50


@pytest.mark.parametrize("ttl", [0, -1, -0.5])
def test_ttl_zero_or_less_deletes(cache: Cache, config: Config, ttl: float) -> None:
    """A ttl of 0 or less stores nothing and removes the key."""
    cache["k"] = config.value(1)
    cache.set("k", config.value(2), ttl=ttl)
    assert "k" not in cache
    cache.set("fresh", config.value(3), ttl=ttl)
    assert "fresh" not in cache
    assert len(cache) == 0


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_zero_or_less_leaves_no_key_whatever_the_call(cache: Cache, config: Config, ttl: float) -> None:
    """Through set_many, add, replace and touch too, a ttl of 0 or less
    leaves the key absent."""
    cache.set_many({"a": config.value(1), "b": config.value(2)}, ttl=ttl)
    cache.add("c", config.value(3), ttl=ttl)
    cache["d"] = config.value(4)
    cache.replace("d", config.value(5), ttl=ttl)
    cache["e"] = config.value(6)
    cache.touch("e", ttl)
    assert not any(key in cache for key in "abcde")
    assert len(cache) == 0


def test_a_set_that_fails_leaves_no_old_value(cache: Cache, config: Config) -> None:
    """A set whose value is refused (unserializable, or too large), with any
    ttl, raises and removes the old value (memcached's rule): a reader must
    never take the old value for the new one."""
    limit = cache.stats()["max_value_size"]
    too_large = b"x" * (limit + 1) if config.serializer_name == "raw" else "x" * (limit + 1)
    failing = [
        (errors.SerializationError, unserializable(), None),
        (errors.SerializationError, unserializable(), 0),
        (errors.ValueTooLarge, too_large, None),
    ]
    for error, value, ttl in failing:
        cache["k"] = config.value(1)
        cache.set_many({"many": config.value(1)})
        with pytest.raises(error):
            cache.set("k", value, ttl=ttl)
        with pytest.raises(error):
            cache.set_many({"many": value, "other": config.value(2)})
        assert "k" not in cache and "many" not in cache and "other" not in cache
        cache.check()


def test_a_failed_add_replace_or_cas_keeps_the_value(cache: Cache, config: Config) -> None:
    """Only set drops the old value when it fails: add, replace and
    compare_and_set that raise leave what was stored."""
    cache["k"] = config.value(1)
    _value, token = cache.gets("k")
    for store in (cache.add, cache.replace, lambda k, v: cache.compare_and_set(k, v, token)):
        with pytest.raises(errors.SerializationError):
            store("k", unserializable())
    assert cache["k"] == config.value(1)


def test_an_expired_key_is_a_miss_everywhere(cache: Cache, config: Config) -> None:
    """Once its ttl passes a key is absent for get, [], in, len, iteration,
    ttl and delete, and add may store it again."""
    cache.set("k", config.value(1), ttl=0.05)
    cache.set("stays", config.value(2))
    wait_until(lambda: "k" not in cache, "the key expired")
    assert cache.get("k") is None
    with pytest.raises(KeyError):
        cache["k"]
    with pytest.raises(KeyError):
        cache.ttl("k")
    assert len(cache) == 1
    assert list(cache) == ["stays"]
    assert cache.touch("k", 100) is False
    assert cache.replace("k", config.value(3)) is False
    assert cache.add("k", config.value(4)) is True
    assert cache["k"] == config.value(4)


def test_an_expired_key_still_in_the_table_is_a_miss(cache: Cache, config: Config) -> None:
    """delete of an expired key returns False (it was gone already) and
    ttl raises KeyError, also while its item is still in the table: only a
    witness key set after them is read (a read that finds an expired key
    may remove it)."""
    cache.set("deleted", config.value(1), ttl=0.05)
    cache.set("asked", config.value(1), ttl=0.05)
    cache.set("witness", config.value(2), ttl=0.05)  # expires no sooner than they do
    wait_until(lambda: "witness" not in cache, "the witness key expired")
    assert cache.delete("deleted") is False
    with pytest.raises(KeyError):
        cache.ttl("asked")


def test_touch_gives_a_new_ttl(cache: Cache, config: Config) -> None:
    """touch sets a present key's ttl (FOREVER, seconds, or short enough to
    expire) and returns False for an absent key."""
    assert cache.touch("absent", 10) is False
    cache.set("k", config.value(1), ttl=100)
    assert cache.touch("k", FOREVER) is True
    assert cache.ttl("k") is None
    assert cache.touch("k", 30) is True
    assert 0 < cache.ttl("k") <= 30
    assert cache.touch("k", 0.05) is True
    wait_until(lambda: "k" not in cache, "the touched key expired")


def test_touch_without_ttl_uses_the_default(config: Config, reopen: Callable[..., Cache]) -> None:
    """touch(key) gives the default ttl (forever when there is none)."""
    timed = reopen(default_ttl=100)
    timed.set("k", config.value(1), ttl=FOREVER)
    assert timed.touch("k") is True
    assert 0 < timed.ttl("k") <= 100
    plain = reopen()
    assert plain.touch("k") is True
    assert plain.ttl("k") is None


def test_ttl_of_an_absent_key_raises_keyerror(cache: Cache) -> None:
    """ttl() of an absent key raises KeyError."""
    with pytest.raises(KeyError):
        cache.ttl("absent")


@pytest.mark.parametrize("ttl", ["10", float("nan"), True, [1]])
def test_a_ttl_that_is_not_seconds_is_refused(cache: Cache, config: Config, ttl: Any) -> None:
    """A ttl must be a number, None or FOREVER: anything else is InvalidArgument."""
    with pytest.raises(errors.InvalidArgument):
        cache.set("k", config.value(1), ttl=ttl)
    assert "k" not in cache


@pytest.mark.parametrize("default_ttl", [0, -5, float("nan")])
def test_a_default_ttl_must_be_positive(config: Config, default_ttl: float) -> None:
    """default_ttl is > 0 seconds or None."""
    with pytest.raises(errors.InvalidArgument):
        Cache(size=CACHE_SIZE, serializer=config.serializer(), default_ttl=default_ttl)


# -- incr / decr --------------------------------------------------------------------------


def test_incr_and_decr(cache: Cache, config: Config) -> None:
    """incr/decr add to an integer value and return the new value."""
    if not config.integers:
        pytest.skip("this serializer stores no integers")
    cache["n"] = 10
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n") == 15
    assert cache.decr("n", 20) == -5
    assert cache["n"] == -5


def test_incr_of_an_absent_key_raises_keyerror(cache: Cache) -> None:
    """incr does not create a key."""
    with pytest.raises(KeyError):
        cache.incr("n")
    assert "n" not in cache


def test_incr_of_a_non_number_raises_typeerror(cache: Cache, config: Config) -> None:
    """incr of a value that is not an int or float (a bool is not) raises TypeError
    and leaves the value alone."""
    values = [config.value(1)] + ([True, "12", None] if config.integers else [])
    for value in values:
        cache["v"] = value
        with pytest.raises(TypeError):
            cache.incr("v")
        assert cache["v"] == value


def test_incr_keeps_the_ttl(cache: Cache, config: Config) -> None:
    """incr keeps the key's expiry: a timed key stays timed, a permanent one permanent."""
    if not config.integers:
        pytest.skip("this serializer stores no integers")
    cache.set("timed", 1, ttl=100)
    cache.set("forever", 1)
    cache.incr("timed")
    cache.incr("forever")
    assert 0 < cache.ttl("timed") <= 100
    assert cache.ttl("forever") is None


def _expiry_bounds(cache: Cache, key: str) -> tuple[float, float, int]:
    """(earliest, latest) absolute monotonic expiry of key, and its stale window."""
    before = time.monotonic()
    _data, _fmt, remaining, stale, _csn, _delta = cache._lookup(key)
    after = time.monotonic()
    return before + remaining, after + remaining, stale


def test_incr_keeps_the_absolute_expiry_and_the_stale_window(cache: Cache, config: Config) -> None:
    """Many increments never push the expiry back (each used to store
    now + remaining, adding its own latency) nor drop the stale window
    get_or_compute gave the key (issue 9, defect 7)."""
    if not config.integers:
        pytest.skip("this serializer stores no integers")
    cache.get_or_compute("n", lambda: 0, ttl=100, stale_ttl=30)
    _earliest, latest, stale = _expiry_bounds(cache, "n")
    for _ in range(300):
        cache.incr("n")
    earliest_after, _latest, stale_after = _expiry_bounds(cache, "n")
    assert earliest_after <= latest + 1e-6, f"the expiry moved {earliest_after - latest:.6f} s later"
    assert (stale, stale_after) == (30, 30)
    assert cache["n"] == 300


# -- statistics ---------------------------------------------------------------------------------


def test_stats_count_hits_misses_sets_and_deletes(cache: Cache, config: Config) -> None:
    """Each get is a hit or a miss, each stored value a set, each removal a delete."""
    before = cache.stats()
    cache["a"] = config.value(1)
    cache.get("a")
    assert "a" in cache
    cache.get("x")
    cache.get("y")
    assert "z" not in cache
    cache.delete("a")
    after = cache.stats()
    moved = {name: after[name] - before[name] for name in ("hits", "misses", "sets", "deletes")}
    assert moved == {"hits": 2, "misses": 3, "sets": 1, "deletes": 1}


def test_stats_describe_usage(cache: Cache, config: Config) -> None:
    """entries, payload and bytes used follow what is stored."""
    empty = cache.stats()
    assert empty["entries"] == 0 and empty["bytes_used"] == 0
    cache.set_many({f"k{i}": config.value(i) for i in range(10)})
    stats = cache.stats()
    assert stats["entries"] == 10
    assert stats["payload_bytes"] > 0
    assert 0 < stats["bytes_used"] <= stats["bytes_capacity"]
    assert stats["bytes_used"] + stats["bytes_free"] == stats["bytes_capacity"]


def test_stats_per_process_has_this_process(cache: Cache, config: Config) -> None:
    """per_process lists this process by pid, with its own counts."""
    cache["a"] = config.value(1)
    cache.get("a")
    mine = [entry for entry in cache.stats()["per_process"] if entry["pid"] == os.getpid()]
    assert len(mine) == 1
    assert mine[0]["sets"] >= 1 and mine[0]["hits"] >= 1


# -- lifetime ----------------------------------------------------------------------------------


def test_a_closed_cache_refuses_every_operation(config: Config, segment_name: str) -> None:
    """After close() (or leaving a with block) every operation raises SegmentClosed."""
    with Cache(segment_name if config.named else None, CACHE_SIZE, serializer=config.serializer()) as closed:
        closed["k"] = config.value(1)
    for operation in (lambda: closed.get("k"), lambda: closed.set("k", config.value(1)), lambda: len(closed)):
        with pytest.raises(errors.SegmentClosed):
            operation()
    assert "closed" in repr(closed)


def test_a_named_cache_keeps_its_entries_across_opens(config: Config, segment_name: str) -> None:
    """A named cache outlives the handle that wrote it: the next open finds the entries."""
    if not config.named:
        pytest.skip("an anonymous cache has no name to reopen")
    with Cache(segment_name, CACHE_SIZE, serializer=config.serializer()) as first:
        first["k"] = config.value(1)
    with Cache(segment_name, serializer=config.serializer()) as second:
        assert second["k"] == config.value(1)
        second.check()


# -- compare-and-set -------------------------------------------------------------


def test_compare_and_set_stores_only_over_the_write_it_read(cache: Cache, config: Config) -> None:
    """gets() returns a token that names one write: compare_and_set and
    compare_and_delete succeed only while that write is still the key's."""
    assert cache.gets("k") == (None, None)
    assert cache.gets("k", "default") == ("default", None)
    assert not cache.compare_and_set("k", config.value(1), 1)  # absent
    cache["k"] = config.value(1)
    value, token = cache.gets("k")
    assert value == config.value(1)
    cache["k"] = config.value(2)  # another write: the token is stale
    assert not cache.compare_and_set("k", config.value(3), token)
    assert not cache.compare_and_delete("k", token)
    assert cache["k"] == config.value(2)
    _value, token = cache.gets("k")
    assert cache.compare_and_set("k", config.value(3), token, ttl=60)
    assert cache["k"] == config.value(3) and 0 < cache.ttl("k") <= 60
    _value, token = cache.gets("k")
    assert cache.compare_and_delete("k", token)
    assert "k" not in cache and len(cache) == 0 and cache.keys() == []
    assert not cache.delete("k")
    assert cache.add("k", config.value(4))
    cache.check()


def test_compare_and_set_sees_every_other_writer(cache: Cache, config: Config, reopen: Callable[..., Cache]) -> None:
    """A write through another handle (another mapping of a named segment)
    makes the token stale as well."""
    other = reopen()
    cache["k"] = config.value(1)
    _value, token = cache.gets("k")
    other.touch("k", 30)  # a touch keeps the write: the token holds
    assert cache.compare_and_set("k", config.value(2), token)
    _value, token = cache.gets("k")
    other["k"] = config.value(3)
    assert not cache.compare_and_set("k", config.value(4), token)
    assert cache["k"] == config.value(3)


# -- keys over 250 bytes -----------------------------------------------------------

LONG_KEYS = ["k" * 251, b"b" * 251, "é" * 125 + "a", "u" * 10_000]


def test_long_keys_work_like_short_ones(cache: Cache, config: Config) -> None:
    """A key over 250 bytes is stored under a digest, but behaves as any
    key: every operation works, keys() lists it in full, and a str key and
    its UTF-8 bytes are one key."""
    for i, key in enumerate(LONG_KEYS):
        assert cache.get(key) is None and key not in cache and not cache.delete(key)
        with pytest.raises(KeyError):
            cache[key]
        cache[key] = config.value(i)
        assert cache[key] == config.value(i) and cache.get(key) == config.value(i) and key in cache
        assert not cache.add(key, config.value(99))
        assert cache.replace(key, config.value(i + 1))
        assert cache.get_many([key, "short"]) == {key: config.value(i + 1)}
        assert cache.touch(key, 60) and 0 < cache.ttl(key) <= 60
        alias = key.encode() if isinstance(key, str) else key.decode()
        assert cache[alias] == config.value(i + 1)
    assert sorted(cache.keys()) == sorted(k if isinstance(k, str) else k.decode() for k in LONG_KEYS)
    assert len(cache) == len(LONG_KEYS)
    assert cache.delete_many(LONG_KEYS) == len(LONG_KEYS)
    assert len(cache) == 0 and cache.keys() == []
    cache.check()


def test_long_keys_count_and_compute(cache: Cache, config: Config) -> None:
    """incr, compare-and-set and get_or_compute work on long keys too."""
    key = "c" * 300
    if config.integers:
        assert cache.incr(key, 2, default=0) == 2 and cache.incr(key) == 3
    _value, token = cache.gets(key)
    assert cache.compare_and_set(key, config.value(7), token)
    assert cache.get_or_compute(key, lambda: pytest.fail("the value is there")) == config.value(7)
    assert cache.delete(key)
    assert cache.get_or_compute(key, lambda: config.value(8)) == config.value(8)
    assert cache[key] == config.value(8)


def test_long_keys_with_one_digest_never_read_each_other(cache: Cache, config: Config) -> None:
    """The full key is kept beside the value and compared: if another long
    key's value sits under this key's digest (a collision, forged here),
    reads miss and delete leaves it alone instead of returning it."""
    from herdcache import longkeys

    mine, theirs = b"m" * 300, b"t" * 300
    data, fmt = cache._seal(theirs, cache._dumps(config.value(1)))
    cache._store(longkeys.table_key(mine), data, fmt, None, 0, 0)
    assert cache.get(mine) is None and mine not in cache
    assert not cache.delete(mine) and not cache.touch(mine, 5)
    assert cache.keys() == [theirs.decode()]  # the full key that is stored


def test_a_failed_set_of_a_long_key_leaves_no_old_value(cache: Cache, config: Config) -> None:
    """As for short keys: an unserializable value removes the old one."""
    key = "f" * 400
    cache[key] = config.value(1)
    with pytest.raises(errors.SerializationError):
        cache[key] = unserializable()
    assert key not in cache
