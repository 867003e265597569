"""The host's tracking role: one holder, never inherited by a forked child,
handed over at once by a process that exits, taken over when one dies."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from _fleet import HANG, settle, until

import herdcache


def _child(segdir: str, prefix: str, socket: str, conn, inherited: herdcache.TieredCache | None) -> None:
    """Report whether this process holds the role with the parent's object
    (fork) or a cache it opens (spawn); then report when it does."""
    import redis

    if inherited is not None:  # fork: the parent's object, candidate again here
        cache = inherited
    else:
        remote = redis.Redis(unix_socket_path=socket, protocol=3)
        cache = herdcache.TieredCache("host", "4MiB", remote=remote, prefix=prefix, dir=segdir)
    conn.send(("opened", cache.tracker_elected))
    until(lambda: cache.tracker_elected and cache.tracking, "this process to become the tracker")
    conn.send(("elected", cache.epoch))
    conn.recv()  # hold the role until told to go


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_role_is_never_inherited_and_passes_at_once_on_exit(redis_server, segdir, prefix, method) -> None:
    ctx = multiprocessing.get_context(method)
    parent = herdcache.TieredCache("host", "4MiB", remote=redis_server.client(), prefix=prefix, dir=segdir)
    until(lambda: parent.tracker_elected and parent.tracking, "the first process to become the tracker")
    epoch = parent.epoch
    mine, theirs = ctx.Pipe()
    child = ctx.Process(
        target=_child,
        args=(segdir, prefix, redis_server.socket, theirs, parent if method == "fork" else None),
        daemon=True,
    )
    child.start()
    try:
        assert mine.poll(HANG) and mine.recv() == ("opened", False)
        assert parent.tracker_elected

        parent.close()  # hands the role over now: no lease, no timeout

        assert mine.poll(HANG), "the child never became the tracker"
        what, child_epoch = mine.recv()
        assert what == "elected" and child_epoch > epoch  # the new tracker flushed the L1
        mine.send("go")
        child.join(HANG)
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()


def test_an_invalidation_the_tracker_fails_to_handle_flushes_the_l1(host, monkeypatch) -> None:
    """redis-py only logs what a push handler raises, so an invalidation
    whose handling failed would be lost without a word, and its key's old
    copy served on.  The tracker ends its session instead, as on a lost
    connection: the L1 is flushed (the epoch moves), and the key reads
    its new value."""
    from herdcache import _tracking

    a, b = host("a"), host("b")
    a.set("k", "old")
    settle(a, b)
    assert b.get("k") == "old"  # a copy in b's L1
    epoch = b.epoch
    failures = []
    drop = _tracking.Tracker._drop

    def failing_drop(self, key: bytes) -> None:
        if self.cache is b and not failures:
            failures.append(key)
            raise RuntimeError("a handler that failed")
        drop(self, key)

    monkeypatch.setattr(_tracking.Tracker, "_drop", failing_drop)
    a.set("k", "new")
    until(lambda: b.epoch > epoch and b.tracking, "b's tracker to flush after the failed message and track again")
    assert failures, "the handler never failed: the test proved nothing"
    assert b.get("k") == "new"
