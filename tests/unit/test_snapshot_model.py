"""Snapshots against a versioned model, one process: Hypothesis drives
random sequences of set, delete, atomic set_many/delete_many, snapshot
open and close, reads through the open snapshots and plain reads, and a
flood that makes the cache evict.  The model keeps the whole history of
states, each tagged with the csn after its commit; a snapshot at csn S
must read the last state at or before S.

Before any eviction every answer is exact.  After one, a key may read as
absent (evicted, as a plain get) or the snapshot may raise SnapshotTooOld;
a snapshot must never return a value the model did not hold at S.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from herdcache import Cache, errors

KEYS = st.sampled_from(["a", "b", "c", "d", "e" * 300])
VALUES = st.integers(0, 1000) | st.text(max_size=8)
MISSING = object()


class SnapshotModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = Cache(size="2MiB", max_snapshot_age=None)
        self.history: list[tuple[int, dict[str, Any]]] = [(self.cache.csn, {})]
        self.snapshots: list[Any] = []  # (Snapshot, csn)
        self.evicted = False

    @property
    def state(self) -> dict[str, Any]:
        return self.history[-1][1]

    def commit(self, new: dict[str, Any]) -> None:
        self.history.append((self.cache.csn, new))

    def at(self, csn: int) -> dict[str, Any]:
        return [state for c, state in self.history if c <= csn][-1]

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: Any) -> None:
        self.cache.set(key, value)
        self.commit({**self.state, key: value})

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.cache.delete(key)
        self.commit({k: v for k, v in self.state.items() if k != key})

    @rule(items=st.dictionaries(KEYS, VALUES, min_size=1, max_size=4))
    def set_many_atomic(self, items: dict[str, Any]) -> None:
        self.cache.set_many(items, atomic=True)
        self.commit({**self.state, **items})

    @rule(keys=st.lists(KEYS, min_size=1, max_size=4))
    def delete_many_atomic(self, keys: list[str]) -> None:
        present = {k for k in keys if k in self.state}
        assert self.cache.delete_many(keys, atomic=True) == len(present) or self.evicted
        self.commit({k: v for k, v in self.state.items() if k not in keys})

    @precondition(lambda self: len(self.snapshots) < 3)
    @rule()
    def open_snapshot(self) -> None:
        snap = self.cache.snapshot().__enter__()
        assert snap.csn == self.history[-1][0]
        self.snapshots.append(snap)

    @precondition(lambda self: self.snapshots)
    @rule(i=st.integers(0, 2))
    def close_snapshot(self, i: int) -> None:
        self.snapshots.pop(i % len(self.snapshots)).__exit__(None, None, None)

    @rule()
    def flood(self) -> None:
        """Fill the cache past capacity: eviction may take anything."""
        for i in range(200):
            self.cache.set(f"fill{i}", b"x" * 8000)
        self.evicted = True
        self.commit(dict(self.state))

    @invariant()
    def snapshots_read_their_moment(self) -> None:
        for snap in self.snapshots:
            expected = self.at(snap.csn)
            for key in ["a", "b", "c", "d", "e" * 300]:
                try:
                    got = snap.get(key, MISSING)
                except errors.SnapshotTooOld:
                    assert self.evicted, "too old without any eviction"
                    continue
                want = expected.get(key, MISSING)
                assert got == want or (self.evicted and got is MISSING), (key, got, want, snap.csn)

    @invariant()
    def plain_reads_are_the_newest(self) -> None:
        for key in ["a", "b", "c", "d", "e" * 300]:
            got = self.cache.get(key, MISSING)
            want = self.state.get(key, MISSING)
            assert got == want or (self.evicted and got is MISSING), (key, got, want)

    @invariant()
    def kept_versions_are_not_listed(self) -> None:
        if not self.evicted:
            assert len(self.cache) == len(self.state)
            assert sorted(self.cache.keys()) == sorted(self.state)

    @rule(key=KEYS, value=VALUES)
    def compute(self, key: str, value: Any) -> None:
        """get_or_compute over a deleted key (a tombstone) computes."""
        got = self.cache.get_or_compute(key, lambda: value)
        if key not in self.state or self.evicted:
            self.commit({**self.state, key: got})
        assert got == self.state[key]

    def teardown(self) -> None:
        for snap in self.snapshots:
            snap.__exit__(None, None, None)
        self.cache.check()
        self.cache.close()


TestSnapshotModel = SnapshotModel.TestCase
TestSnapshotModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
