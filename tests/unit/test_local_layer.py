"""The per-process decoded layer (``Cache(local_items=...)``), one process.

A layered cache and a plain one are opened on the same segment, so they
share one table: whatever one does, the other's next get must agree with
it.  The layer may only make a hit cheaper, never older.  A Hypothesis
state machine drives both through random writes, deletes, touches,
clears and floods that evict; the multi-process side (a writer in another
process, a writer SIGKILLed) is tests/multiprocess/test_local_layer_mp.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from cache_helpers import same
from helpers import wait_until
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from herdcache import Cache, Segment, errors

MISSING = object()
VALUE = {"name": "Ada", "roles": ["admin"]}


@pytest.fixture
def pair() -> Any:
    """(layered, plain): two caches over one anonymous segment."""
    seg = Segment.anonymous("8MiB")
    layered = Cache(segment=seg, local_items=100)
    plain = Cache(segment=seg)
    yield layered, plain
    seg.close()


def test_a_hit_is_the_same_object_until_the_item_changes(pair: Any) -> None:
    layered, plain = pair
    plain.set("k", VALUE)
    first = layered.get("k")
    assert first == VALUE
    assert layered.get("k") is first and layered["k"] is first
    assert layered.stats()["local"]["hits"] == 2
    plain.set("k", VALUE)  # equal bytes, but a new write: a new object
    second = layered.get("k")
    assert second == VALUE and second is not first


@pytest.mark.parametrize(
    "change",
    [
        lambda cache: cache.set("k", "new"),
        lambda cache: cache.delete("k"),
        lambda cache: cache.clear(),
        lambda cache: cache.set("k", "x", ttl=0),
        lambda cache: cache.incr("n"),
    ],
    ids=["set", "delete", "clear", "ttl-0", "incr"],
)
def test_every_write_by_another_handle_is_seen_at_once(pair: Any, change: Any) -> None:
    layered, plain = pair
    plain.set("k", "old")
    plain.set("n", 1)
    assert layered.get("k") == "old" and layered.get("k") == "old"
    assert layered.get("n") == 1
    change(plain)
    assert layered.get("k", MISSING) == plain.get("k", MISSING)
    assert layered.get("n", MISSING) == plain.get("n", MISSING)


def test_expiry_is_seen_at_once(pair: Any) -> None:
    layered, plain = pair
    layered.set("k", "short", ttl=0.05)
    assert layered.get("k") == "short" and layered.get("k") == "short"
    wait_until(lambda: plain.get("k") is None, "the key expired for a plain get")
    assert layered.get("k") is None


def test_touch_keeps_the_local_value() -> None:
    with Cache(size="4MiB", local_items=10) as cache:
        cache.set("k", VALUE, ttl=30)
        first = cache.get("k")
        assert cache.touch("k", 60)
        assert cache.get("k") is first  # same item: touch changes no bytes


def test_eviction_is_seen_at_once() -> None:
    seg = Segment.anonymous("2MiB")
    layered, plain = Cache(segment=seg, local_items=10), Cache(segment=seg)
    plain.set("k", "v" * 1000)
    assert layered.get("k") == "v" * 1000
    # Flood until the table evicts k.  The flood is read once too: SIEVE
    # spares a visited key (as k is) for as long as only keys never read
    # come in.  keys() looks without a get's visited mark.
    for i in range(100_000):
        plain.set(f"flood:{i}", "x" * 1000)
        plain.get(f"flood:{i}")
        if i % 100 == 0 and "k" not in plain.keys():
            break
    assert "k" not in plain.keys(), "the cache never evicted k"
    assert layered.get("k") is None
    seg.close()


def test_the_layer_is_bounded_in_items_and_bytes() -> None:
    with Cache(size="8MiB", local_items=5, local_bytes=1000) as cache:
        for i in range(50):
            cache.set(f"k{i}", "v" * 100)
            cache.get(f"k{i}")
        local = cache.stats()["local"]
        assert local["items"] == 5 and local["bytes"] <= 1000
        cache.set("big", "v" * 2000)  # larger than the byte bound: never kept
        assert cache.get("big") == "v" * 2000
        assert cache.stats()["local"]["bytes"] <= 1000
        for i in range(50):  # shared hits go on, whatever the layer dropped
            assert cache.get(f"k{i}") == "v" * 100


def test_immutable_mode_keeps_only_immutable_values() -> None:
    with Cache(size="4MiB", local_items=10, local_values="immutable") as cache:
        cache.set("d", {"a": [1]})
        cache.set("t", (1, "x", (2.5, None), frozenset({3})))
        assert cache.get("d") is not cache.get("d")  # decoded afresh each time
        assert cache.get("t") is cache.get("t")
        assert cache.stats()["local"]["items"] == 1


def test_off_by_default_and_options_checked() -> None:
    with Cache(size="4MiB") as cache:
        cache.set("k", VALUE)
        assert cache.get("k") is not cache.get("k")
        assert cache.stats()["local"]["items"] == 0
    for bad in ({"local_items": -1}, {"local_items": 1.5}, {"local_values": "frozen"}):
        with pytest.raises(errors.InvalidArgument):
            Cache(size="4MiB", **bad)


def test_bad_keys_fail_as_without_the_layer() -> None:
    with Cache(size="4MiB", local_items=10) as cache:
        with pytest.raises(TypeError):
            cache.get(1)
        with pytest.raises(errors.ValueTooLarge):
            cache.get("")
        # A long key takes the long-key path, with the layer as without.
        assert cache.get("k" * 251) is None
        cache["k" * 251] = 1
        assert cache.get("k" * 251) == 1 and cache["k" * 251] == 1


KEYS = st.sampled_from(["a", b"a", "b", "c", "d"])
SMALL = st.integers(-(2**63), 2**63 - 1)
VALUES = st.one_of(SMALL, st.text(max_size=8), st.lists(SMALL, max_size=3))


class LayeredAgainstPlain(RuleBasedStateMachine):
    """A layered cache and a plain one on one small segment: every get of
    the layered one equals the plain one's at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.seg = Segment.anonymous("2MiB")
        self.layered = Cache(segment=self.seg, local_items=3)
        self.plain = Cache(segment=self.seg)

    def handle(self, which: bool) -> Cache:
        return self.layered if which else self.plain

    @rule(which=st.booleans(), key=KEYS, value=VALUES)
    def set(self, which: bool, key: Any, value: Any) -> None:
        self.handle(which).set(key, value)

    @rule(which=st.booleans(), key=KEYS)
    def delete(self, which: bool, key: Any) -> None:
        self.handle(which).delete(key)

    @rule(which=st.booleans(), key=KEYS)
    def touch(self, which: bool, key: Any) -> None:
        self.handle(which).touch(key, 3600)

    @rule(which=st.booleans())
    def clear(self, which: bool) -> None:
        self.handle(which).clear()

    @rule(start=st.integers(0, 10**6))
    def flood(self, start: int) -> None:
        """Enough writes (each read once, see test_eviction_is_seen_at_once)
        to make the table evict some of the keys."""
        for i in range(start, start + 300):
            self.plain.set(f"flood:{i}", "x" * 2000)
            self.plain.get(f"flood:{i}")

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        got, expected = self.layered.get(key, MISSING), self.plain.get(key, MISSING)
        assert got is expected if expected is MISSING else same(got, expected), (got, expected)

    @invariant()
    def every_key_agrees(self) -> None:
        for key in ("a", "b", "c", "d"):
            got, expected = self.layered.get(key, MISSING), self.plain.get(key, MISSING)
            assert got is expected if expected is MISSING else same(got, expected), (key, got, expected)

    def teardown(self) -> None:
        self.seg.close()


TestLayeredAgainstPlain = LayeredAgainstPlain.TestCase
TestLayeredAgainstPlain.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
