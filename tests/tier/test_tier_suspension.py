"""A late PING reply suspends the host's L1, it does not flush it: while
the tracker waits (the grace), no L1 copy is served as fresh; a reply
within the grace resumes the L1 with every copy, without an epoch bump or
a reconnect; none by then flushes it as any lost connection does."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading

import pytest
from _fleet import HANG, settle, succeeds, until

import herdcache
from herdcache import _remote, _tracking, tier
from herdcache.errors import RemoteUnavailable

TIMEOUT = 0.25


@pytest.fixture
def long_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grace no loaded machine outlasts: the test, not the clock, ends
    the server's pause (a forked child inherits it)."""
    monkeypatch.setattr(_tracking, "GRACE_MIN", HANG)


def open_tier(name: str, server, segdir: str, prefix: str, **kwargs) -> herdcache.TieredCache:
    cache = herdcache.TieredCache(
        name, "4MiB", remote=server.client(), prefix=prefix, dir=segdir, timeout=TIMEOUT, **kwargs
    )
    until(lambda: cache.tracking, f"host {name} tracking")
    return cache


def tier_stat(cache: herdcache.TieredCache, name: str) -> int:
    return int(cache.stats()["tier"][name])


#: Commands that are not reads of the cache's data: the counting INFO,
#: and a tracker's heartbeat PING that may land between two counts.
NOT_DATA = {"info", "ping"}


def data_commands_since(server, before: dict[str, int]) -> set[str]:
    """The data commands the server ran since ``before`` (its commandstats)."""
    after = server.commandstats()
    return {c for c in after if after[c] != before.get(c, 0)} - NOT_DATA


def tracking_client_ids(server) -> set[int]:
    """The ids of the server's connections in tracking mode."""
    return {c["id"] for c in server.client().client_list() if "t" in c["flags"]}


def test_a_late_ping_reply_resumes_the_l1_without_a_flush(own_redis, segdir, prefix, long_grace) -> None:
    """SIGSTOP the server past the PING's timeout, well inside the grace:
    the L1 is suspended meanwhile; once continued, the tracker resumes it
    on the same connection (no reconnect, epoch unchanged), and a copy
    stored before the stop is served from the L1 with no Redis read."""
    a = open_tier("a", own_redis, segdir, prefix)
    try:
        a.set("kept", "v", ttl=600)
        settle(a)  # the write's own invalidation is handled: the copy stays
        epoch, trackers = a.epoch, tracking_client_ids(own_redis)
        assert len(trackers) == 1

        own_redis.pause()
        try:
            until(lambda: a.suspended, "the tracker to suspend the L1 when its PING went unanswered")
            assert a.epoch == epoch and a.tracking
        finally:
            own_redis.resume()

        until(lambda: tier_stat(a, "resumes") == 1, "the PING's late reply to resume the L1")
        assert not a.suspended and a.tracking
        assert a.epoch == epoch, "the late reply flushed the L1"
        assert tier_stat(a, "suspensions") == 1
        assert tracking_client_ids(own_redis) == trackers, "the tracker reconnected"
        before = own_redis.commandstats()
        assert a.get("kept") == "v"
        assert not data_commands_since(own_redis, before), "read from Redis"
    finally:
        a.close()


def test_while_suspended_no_l1_copy_is_served_as_fresh(own_redis, segdir, prefix, long_grace) -> None:
    """During the suspension (the server stopped), a get of a key whose
    copy is in the L1 raises RemoteUnavailable, as for a key the L1 does
    not hold; only a host opted in with stale_if_error gets the copy, as
    a stale one."""
    plain = open_tier("plain", own_redis, segdir, prefix)
    opted = open_tier("opted", own_redis, segdir, prefix, stale_if_error=60)
    try:
        plain.set("k", "v", ttl=600)
        settle(plain, opted)
        assert opted.get("k") == "v"  # a copy in each L1 now
        epochs = plain.epoch, opted.epoch

        own_redis.pause()
        try:
            until(lambda: plain.suspended and opted.suspended, "both hosts to suspend their L1")
            with pytest.raises(RemoteUnavailable):
                plain.get("k")
            assert opted.get("k") == "v" and tier_stat(opted, "stale_if_error") == 1
            assert (plain.epoch, opted.epoch) == epochs  # not flushed: suspended
        finally:
            own_redis.resume()
        until(lambda: not plain.suspended and not opted.suspended, "both hosts to resume")
        assert (plain.epoch, opted.epoch) == epochs
    finally:
        plain.close()
        opted.close()


def test_every_read_of_the_l1_goes_to_redis_while_suspended(own_redis, segdir, prefix) -> None:
    """Each way of reading a key (get, [], in, get_many, get_or_compute,
    memoize, aget, aget_or_compute, each on its own) takes no L1 copy
    while the host's suspension flag is up: it reads Redis, and still gets
    the value; once the flag is down, the L1 answers again with no Redis
    read.  (The flag is raised by hand here: the tracker leaves it alone
    while its PINGs are answered.)"""
    a = open_tier("a", own_redis, segdir, prefix)
    flag = a.segment.counter("tier.suspended")
    try:
        a.set("k", "v", ttl=600)
        a.set_many({"m1": 1, "m2": 2}, ttl=600)
        settle(a)
        compute_calls = []

        @a.memoize(ttl=600)
        def square(x: int) -> int:
            compute_calls.append(x)
            return x * x

        assert square(3) == 9

        async def never() -> str:
            raise AssertionError("computed although Redis holds the value")

        reads = {
            "get": lambda: a.get("k") == "v",
            "[]": lambda: a["k"] == "v",
            "in": lambda: "k" in a,
            "get_many": lambda: a.get_many(["k", "m1", "m2"]) == {"k": "v", "m1": 1, "m2": 2},
            "get_or_compute": lambda: a.get_or_compute("k", lambda: "computed", ttl=600) == "v",
            "memoize": lambda: square(3) == 9,
            "aget": lambda: asyncio.run(a.aget("k")) == "v",
            "aget_or_compute": lambda: asyncio.run(a.aget_or_compute("k", never, ttl=600)) == "v",
        }
        for suspended in (1, 0, 1):
            flag.store(suspended)
            for name, read in reads.items():
                before = own_redis.commandstats()
                assert read(), name
                went = data_commands_since(own_redis, before)
                assert bool(went) == bool(suspended), f"{name} with the flag {suspended}: Redis saw {went}"
        assert compute_calls == [3]
    finally:
        flag.store(0)
        a.close()


def _tracker_child(segdir: str, prefix: str, socket: str, conn) -> None:
    import redis

    cache = herdcache.TieredCache(
        "h", "4MiB", remote=redis.Redis(unix_socket_path=socket, protocol=3), prefix=prefix, dir=segdir, timeout=TIMEOUT
    )
    until(lambda: cache.tracker_elected and cache.tracking, "the child to become the tracker")
    conn.send("elected")
    conn.recv()  # killed while waiting here


def test_a_tracker_killed_while_suspended_leaves_no_suspension(own_redis, segdir, prefix, long_grace) -> None:
    """The host's tracker is SIGKILLed while its L1 is suspended: the next
    process takes the role and its first session's flush ends the
    suspension (the copies are expired by then, the epoch moved), even
    while the server is still stopped; and the host works once it is back."""
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_tracker_child, args=(segdir, prefix, own_redis.socket, theirs), daemon=True)
    child.start()
    heir = None
    try:
        assert mine.poll(HANG) and mine.recv() == "elected", "the child never became the tracker"
        heir = herdcache.TieredCache(
            "h", "4MiB", remote=own_redis.client(), prefix=prefix, dir=segdir, timeout=TIMEOUT
        )
        heir.set("k", "before", ttl=600)
        assert not heir.tracker_elected
        epoch = heir.epoch

        own_redis.pause()
        try:
            until(lambda: heir.suspended, "the child's tracker to suspend the L1")
            os.kill(child.pid, signal.SIGKILL)
            child.join(HANG)
            until(lambda: heir.epoch > epoch and not heir.suspended, "the next tracker to flush and end the suspension")
            assert heir._lookup("k")[2] <= 0  # expired by the flush, not served as fresh
        finally:
            own_redis.resume()
        until(lambda: heir.tracker_elected and heir.tracking, "this process to hold the host's tracking")
        assert not heir.suspended
        assert heir.get("k") == "before"
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        if heir is not None:
            heir.close()


def test_while_suspended_a_rounds_waiters_take_what_it_publishes(own_redis, segdir, prefix) -> None:
    """While suspended, a host still reads a key once for the readers that
    come together: they wait for the round under way (the one that reads
    Redis) and take the copy it publishes, not the older one it carries,
    and none reads Redis itself.  The round is this test's, begun by hand
    over the fresh copy as a suspended reader begins one."""
    import threading

    a = open_tier("a", own_redis, segdir, prefix)
    flag = a.segment.counter("tier.suspended")
    readers = 4
    try:
        a.set("k", "old", ttl=600)
        settle(a)
        flag.store(1)
        outcome, _data, _fmt, round_, *_ = a._flight_begin("k", 60.0, 0, True)
        assert outcome == "compute"
        waits, before = a.stats()["waits"], own_redis.commandstats()
        got: list = []
        threads = [threading.Thread(target=lambda: got.append(a.get("k"))) for _ in range(readers)]
        for t in threads:
            t.start()
        until(lambda: a.stats()["waits"] == waits + readers, f"{readers} readers to wait for the round")
        assert a._flight_publish("k", a._dumps("new"), a._tag, 600.0, round_, 0.0, 0)
        for t in threads:
            t.join(HANG)
        assert got == ["new"] * readers
        assert not data_commands_since(own_redis, before), "a reader went to Redis"
    finally:
        flag.store(0)
        a.close()


def test_a_value_computed_while_suspended_is_flushed_not_resumed(own_redis, segdir, prefix, long_grace) -> None:
    """get_or_compute during a suspension (the server stopped) computes
    locally; that value has no record in Redis, so no invalidation will
    ever name it: the late reply that ends the suspension flushes the L1
    instead of resuming it, and once Redis answers the host reads what
    Redis holds, not its own local value."""
    a = open_tier("a", own_redis, segdir, prefix)
    b = open_tier("b", own_redis, segdir, prefix)
    try:
        b.set("k", "in-redis", ttl=600)
        settle(a, b)
        own_redis.pause()
        try:
            until(lambda: a.suspended, "a's tracker to suspend its L1")
            epoch, resumes = a.epoch, tier_stat(a, "resumes")
            assert a.get_or_compute("k", lambda: "computed-locally", ttl=600) == "computed-locally"
        finally:
            own_redis.resume()
        until(lambda: not a.suspended, "the late reply to end a's suspension")
        assert a.epoch > epoch and tier_stat(a, "resumes") == resumes, "resumed with the local value fresh"
        until(lambda: succeeds(a.get, "k"), "Redis to answer a again")
        assert a.get("k") == "in-redis"
    finally:
        a.close()
        b.close()


def test_a_refresh_under_way_across_the_flush_serves_no_old_value(own_redis, segdir, prefix, long_grace) -> None:
    """A get_or_compute during a suspension starts a round over the L1's
    fresh copy, and that round carries the old value; if the suspension
    ends in a flush (no reply within the grace: the flush is the
    tracker's own, called here while the round computes, so that it
    surely comes while the round is under way), the carried value is
    expired with every other copy: the L1 serves it no more, while the
    round goes on."""
    a = open_tier("a", own_redis, segdir, prefix)
    computing, release = threading.Event(), threading.Event()

    def build() -> str:
        computing.set()
        assert release.wait(HANG), "the test never released the computation"
        return "new"

    worker = threading.Thread(target=lambda: a.get_or_compute("k", build, ttl=600), daemon=True)
    try:
        a.set("k", "old", ttl=600)
        settle(a)
        assert a._get_value("k", None) == "old"
        own_redis.pause()
        try:
            until(lambda: a.suspended, "a's tracker to suspend its L1")
            epoch = a.epoch
            worker.start()
            assert computing.wait(HANG), "the round never computed (its Redis call never timed out)"
            assert a.epoch == epoch and a.suspended
            a._tracker.flush(keep_stale=True)  # what the end of the grace does
            assert not a.suspended
            assert a._get_value("k", None) is None, "the refresh's old value is still served as fresh"
        finally:
            own_redis.resume()
    finally:
        release.set()
        worker.join(HANG)
        a.close()


def test_a_value_computed_while_tracking_is_live_is_short_lived_and_flushes_nothing(own_redis, segdir, prefix) -> None:
    """With the host's tracking live and not suspended (Redis answers its
    tracker) a worker that cannot reach Redis (here: the host's breaker
    held open) computes locally; its value stays in the L1 UNTRACKED_TTL
    only, and asks the tracker for no flush: one flush per such value
    would empty the L1 over and over while some calls fail."""
    a = open_tier("a", own_redis, segdir, prefix)
    try:
        a.set("other", "kept", ttl=600)
        settle(a)
        epoch = a.epoch
        a._remote._down_until.store(_remote._now_ms() + 600_000)
        try:
            assert a.get_or_compute("k", lambda: "computed-locally", ttl=600) == "computed-locally"
            found = a._lookup("k")
            assert found is not None and 0 < found[2] <= tier.UNTRACKED_TTL
        finally:
            a._remote._down_until.store(0)
        settle(a)  # the tracker has looked at the count since
        assert a.epoch == epoch, "a local value flushed the L1"
        assert a._get_value("other", None) == "kept"
    finally:
        a.close()
