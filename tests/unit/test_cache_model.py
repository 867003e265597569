"""The cache against a model, one process: Hypothesis drives random
sequences of set/get/delete/add/replace/incr/touch/clear/set_many/
delete_many on a Cache and on a dict, and after each step the two must
agree (values with their exact types, membership, len, the key set) and,
every few steps, the table's own invariants must hold (``check()``).

No ttl but FOREVER is used, so the model needs no clock, and the cache is
large enough that nothing is evicted.
"""

from __future__ import annotations

from typing import Any

from cache_helpers import same
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from herdcache import FOREVER, Cache, errors

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
MISSING = object()

#: Few keys, so operations meet; str and bytes spellings of one key among them.
KEYS = st.sampled_from(["a", b"a", "b", "café", "café".encode(), b"\xff\xfe", "k" * 250, "key/with spaces"])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
SMALL_INTS = st.integers(-1000, 1000)


def norm(key: str | bytes) -> bytes:
    """The model's key: what the cache stores (UTF-8 for str)."""
    return key.encode() if isinstance(key, str) else key


def shown(key: bytes) -> str | bytes:
    """A key as the cache lists it: str where it is UTF-8, else bytes."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key


class CacheModel(RuleBasedStateMachine):
    """A Cache and a dict, changed alike, compared after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = Cache(size="32MiB")
        self.model: dict[bytes, Any] = {}
        self.steps = 0

    @initialize(items=st.dictionaries(KEYS, VALUES, max_size=4))
    def start_with(self, items: dict[Any, Any]) -> None:
        self.cache.set_many(items)
        for key, value in items.items():
            self.model[norm(key)] = value

    @rule(key=KEYS, value=VALUES)
    def set(self, key: Any, value: Any) -> None:
        self.cache.set(key, value)
        self.model[norm(key)] = value

    @rule(key=KEYS, value=VALUES)
    def setitem_forever(self, key: Any, value: Any) -> None:
        self.cache.set(key, value, ttl=FOREVER)
        self.model[norm(key)] = value

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        got = self.cache.get(key, MISSING)
        expected = self.model.get(norm(key), MISSING)
        assert got is expected if expected is MISSING else same(got, expected), (got, expected)

    @rule(key=KEYS)
    def getitem(self, key: Any) -> None:
        try:
            got = self.cache[key]
        except KeyError:
            assert norm(key) not in self.model
        else:
            assert same(got, self.model[norm(key)])

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        assert self.cache.delete(key) == (norm(key) in self.model)
        self.model.pop(norm(key), None)

    @rule(key=KEYS, value=VALUES)
    def add(self, key: Any, value: Any) -> None:
        absent = norm(key) not in self.model
        assert self.cache.add(key, value) == absent
        if absent:
            self.model[norm(key)] = value

    @rule(key=KEYS, value=VALUES)
    def replace(self, key: Any, value: Any) -> None:
        present = norm(key) in self.model
        assert self.cache.replace(key, value) == present
        if present:
            self.model[norm(key)] = value

    @rule(key=KEYS, value=SMALL_INTS)
    def set_int(self, key: Any, value: int) -> None:
        self.cache[key] = value
        self.model[norm(key)] = value

    @rule(key=KEYS, delta=SMALL_INTS)
    def incr(self, key: Any, delta: int) -> None:
        current = self.model.get(norm(key), MISSING)
        if current is MISSING:
            expected: Any = KeyError
        elif isinstance(current, bool) or not isinstance(current, (int, float)):
            expected = TypeError
        elif isinstance(current, int) and not INT64_MIN <= current + delta <= UINT64_MAX:
            expected = errors.SerializationError
        else:
            assert self.cache.incr(key, delta) == current + delta
            self.model[norm(key)] = current + delta
            return
        try:
            self.cache.incr(key, delta)
        except expected:
            pass
        else:
            raise AssertionError(f"incr of {current!r} did not raise {expected}")

    @rule(key=KEYS)
    def touch_forever(self, key: Any) -> None:
        assert self.cache.touch(key, FOREVER) == (norm(key) in self.model)

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=4))
    def set_many(self, items: dict[Any, Any]) -> None:
        self.cache.set_many(items)
        for key, value in items.items():
            self.model[norm(key)] = value

    @rule(keys=st.lists(KEYS, max_size=4))
    def delete_many(self, keys: list[Any]) -> None:
        present = {norm(key) for key in keys} & self.model.keys()
        removed = self.cache.delete_many(keys)
        # A key named twice (or in both spellings) is removed once.
        assert removed == len(present)
        for key in present:
            del self.model[key]

    @rule(keys=st.lists(KEYS, max_size=4))
    def get_many(self, keys: list[Any]) -> None:
        got = self.cache.get_many(keys)
        assert {norm(key) for key in got} == {norm(key) for key in keys} & self.model.keys()
        for key, value in got.items():
            assert same(value, self.model[norm(key)])

    @precondition(lambda self: self.model)
    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()

    @invariant()
    def same_keys(self) -> None:
        assert len(self.cache) == len(self.model)
        assert sorted(map(norm, self.cache.keys())) == sorted(self.model)
        assert all(isinstance(key, type(shown(norm(key)))) for key in self.cache)

    @invariant()
    def table_invariants(self) -> None:
        self.steps += 1
        if self.steps % 5 == 0:
            self.cache.check()

    def teardown(self) -> None:
        try:
            self.cache.check()
        finally:
            self.cache.close()


CacheModel.TestCase.settings = settings(max_examples=50, stateful_step_count=50, deadline=None)
TestCacheModel = CacheModel.TestCase
