"""Snapshots and atomic multi-key writes, one process (and one child for
liveness): what a user relies on from ``snapshot()``,
``set_many/delete_many(atomic=True)``, ``get_many(consistent=True)`` and
``csn``, and the limits (``SnapshotTooOld`` by age and by memory)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from helpers import receive, wait_until

from herdcache import Cache, Snapshot, errors

DEADLINE = 10.0


@pytest.fixture
def cache() -> Cache:
    return Cache(size="8MiB")


def test_a_snapshot_reads_the_moment_it_began(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2})
    with cache.snapshot() as snap:
        csn = snap.csn
        cache.set("a", 10)
        cache.delete("b")
        cache.set("c", 3)
        assert (snap.get("a"), snap.get("b"), snap.get("c", "none")) == (1, 2, "none")
        assert snap["a"] == 1 and "b" in snap and "c" not in snap
        assert snap.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        with pytest.raises(KeyError):
            snap["c"]
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (10, None, 3)
        assert snap.csn == csn < cache.csn
    assert cache.get_many(["a", "b", "c"], consistent=True) == {"a": 10, "c": 3}


def test_csn_moves_with_every_write_and_only_then(cache: Cache) -> None:
    before = cache.csn
    assert cache.get("x") is None and cache.csn == before
    cache.set("x", 1)
    after = cache.csn
    assert after > before
    cache.set_many({"y": 1, "z": 2}, atomic=True)
    assert cache.csn == after + 1  # one commit for the whole batch


def test_an_atomic_set_many_is_one_commit_for_snapshots(cache: Cache) -> None:
    cache.set_many({"cfg:a": 1, "cfg:b": 2, "cfg:version": 6}, atomic=True)
    with cache.snapshot() as old:
        cache.set_many({"cfg:a": 10, "cfg:b": 20, "cfg:version": 7}, atomic=True)
        with cache.snapshot() as new:
            assert old.get_many(["cfg:a", "cfg:b", "cfg:version"]) == {"cfg:a": 1, "cfg:b": 2, "cfg:version": 6}
            assert new.get_many(["cfg:a", "cfg:b", "cfg:version"]) == {"cfg:a": 10, "cfg:b": 20, "cfg:version": 7}


def test_an_atomic_delete_many_counts_and_removes_together(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2, "c": 3})
    with cache.snapshot() as snap:
        assert cache.delete_many(["a", "b", "missing", "a"], atomic=True) == 2
        assert cache.get_many(["a", "b", "c"]) == {"c": 3}
        assert snap.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}


def test_a_failed_set_or_a_delete_keeps_the_value_for_a_snapshot(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2})
    before = cache.csn
    with cache.snapshot() as snap:
        with pytest.raises(errors.ValueTooLarge):
            cache.set("a", b"x" * (2 << 20))  # a failed set removes the key...
        assert cache.delete("b")
        assert cache.get_many(["a", "b"]) == {}
        assert snap.get_many(["a", "b"]) == {"a": 1, "b": 2}  # ...not for the snapshot
    assert cache.csn > before + 1  # each removal is a commit


def test_a_refused_atomic_set_many_changes_nothing(cache: Cache) -> None:
    cache.set_many({"a": 1, "b": 2})
    with pytest.raises(errors.ValueTooLarge):
        cache.set_many({"a": 10, "b": b"x" * (2 << 20)}, atomic=True)
    with pytest.raises(errors.SerializationError):
        cache.set_many({"a": 10, "b": object()}, atomic=True)
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    cache.set_many({"a": 5, "b": 6}, ttl=0, atomic=True)  # ttl 0 removes
    assert cache.get_many(["a", "b"]) == {}


def test_long_keys_and_the_local_layer_stay_exact() -> None:
    long_a, long_b = "a" * 300, "b" * 400
    cache = Cache(size="8MiB", local_items=100)
    cache.set_many({long_a: 1, long_b: 2, "short": 3}, atomic=True)
    assert cache.get(long_a) == 1 and cache.get("short") == 3  # now decoded locally
    with cache.snapshot() as snap:
        cache.set_many({long_a: 10, "short": 30}, atomic=True)
        assert (cache.get(long_a), cache.get("short")) == (10, 30)  # not the local copies
        assert (snap[long_a], snap[long_b], snap["short"]) == (1, 2, 3)
        assert cache.delete_many([long_b], atomic=True) == 1
        assert cache.get(long_b) is None and snap[long_b] == 2
    assert cache.keys() and long_a in cache.keys()


def test_a_snapshot_judges_expiry_when_it_reads(cache: Cache) -> None:
    cache.set("soon", 1, ttl=0.2)
    with cache.snapshot() as snap:
        assert snap.get("soon") == 1
        wait_until(lambda: cache.get("soon") is None, "the key to expire", timeout=DEADLINE)
        assert snap.get("soon") is None


def test_get_or_compute_is_one_commit(cache: Cache) -> None:
    with cache.snapshot() as before:
        assert cache.get_or_compute("k", lambda: 42) == 42
        with cache.snapshot() as after:
            assert before.get("k") is None and after.get("k") == 42


def test_a_snapshot_older_than_max_snapshot_age_is_too_old() -> None:
    cache = Cache(size="8MiB", max_snapshot_age=0.05)
    cache.set("a", 1)
    with cache.snapshot() as snap:
        assert snap.get("a") == 1
        start = time.monotonic()
        wait_until(lambda: time.monotonic() - start > 0.1, "the snapshot's age to pass", timeout=DEADLINE)
        with pytest.raises(errors.SnapshotTooOld, match="max_snapshot_age"):
            snap.get("a")
    with cache.snapshot() as fresh:
        assert fresh.get("a") == 1
    with pytest.raises(errors.InvalidArgument):
        Cache(size="8MiB", max_snapshot_age=0)


def test_a_failed_atomic_set_many_costs_open_snapshots_nothing() -> None:
    cache = Cache(size="8MiB", evict=False)
    cache.set_many({"x": 1, "y": 1})
    with cache.snapshot() as snap:
        cache.set("x", 2)  # x = 1 is kept for the snapshot
        with pytest.raises(errors.CacheFull):  # fails midway, every stripe locked
            cache.set_many({"y": 2, **{f"k{i}": b"v" * 4096 for i in range(2000)}}, atomic=True)
        assert snap.get_many(["x", "y"]) == {"x": 1, "y": 1}
    assert cache.get_many(["x", "y", "k0"]) == {"x": 2, "y": 1}


@pytest.mark.parametrize("atomic", [False, True], ids=["set", "atomic-set_many"])
def test_versions_kept_for_a_snapshot_are_bounded_by_memory(atomic: bool) -> None:
    cache = Cache(size="4MiB", max_snapshot_age=None)
    capacity = cache.stats()["bytes_used"] + cache.stats()["bytes_free"]
    value = b"v" * 16000
    batch = 4 if atomic else 1  # keys written per commit
    with cache.snapshot() as snap:
        with pytest.raises(errors.SnapshotTooOld, match="1/4"):
            for i in range(0, 2000, batch):
                cache.set_many({f"k{(i + j) % 8}": value for j in range(batch)}, atomic=atomic)
                assert cache.stats()["snapshot_retained_bytes"] <= capacity // 4 + 2 * batch * len(value)
                snap.get("k0")
    # Closed, it pins nothing: the next writes of those keys free it all.
    for i in range(8):
        cache.set(f"k{i}", 0)
    assert cache.stats()["snapshot_retained_bytes"] == 0


def test_a_snapshot_misused_says_how_to_use_it(cache: Cache) -> None:
    snap = cache.snapshot()
    assert isinstance(snap, Snapshot) and "closed" in repr(snap)
    with pytest.raises(errors.InvalidArgument, match="with cache.snapshot"):
        snap.get("a")
    with snap, pytest.raises(errors.InvalidArgument, match="already open"):
        snap.__enter__()


def _hold_a_snapshot(cache: Cache, conn: object) -> None:
    with cache.snapshot():
        conn.send("open")  # type: ignore[attr-defined]
        signal.pause()


def test_a_reader_killed_inside_a_snapshot_stops_pinning(cache: Cache) -> None:
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_hold_a_snapshot, args=(cache, writer))
    child.start()
    assert receive(reader) == "open"
    cache.set("x", 1)
    cache.set("x", 2)
    assert cache.stats()["snapshot_retained_bytes"] > 0  # the child pins x=1
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    # Writers learn of the death through the slot lock (re-probed at most
    # every 100 ms per thread); every further write of x frees what it kept.
    n = iter(range(3, 10**9))
    wait_until(
        lambda: cache.set("x", next(n)) or cache.stats()["snapshot_retained_bytes"] == 0,
        "the killed reader's versions to be freed",
        timeout=DEADLINE,
    )
