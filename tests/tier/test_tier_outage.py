"""Redis killed, restarted, or stopped (SIGSTOP) under a TieredCache: no
call hangs past its timeouts, errors are clear, the L1 is flushed (its
epoch moves) because invalidations may have been missed, get_or_compute
computes locally, and everything works again once the server is back."""

from __future__ import annotations

import time

import pytest
from _fleet import succeeds, until

import herdcache
from herdcache.errors import RemoteUnavailable

TIMEOUT = 0.25
#: The longest any one call may take while the server is away: its own
#: timeouts (connect, then reply), with room for a loaded machine.
CALL_BOUND = 4 * TIMEOUT + 1.0


@pytest.fixture
def pair(own_redis, segdir, prefix):
    """Two hosts on a server of this test's own."""
    caches = [
        herdcache.TieredCache(n, "4MiB", remote=own_redis.client(), prefix=prefix, dir=segdir, timeout=TIMEOUT)
        for n in ("a", "b")
    ]
    for c in caches:
        until(lambda c=c: c.tracking, f"{c.name} tracking")
    yield caches
    for c in caches:
        c.close()


def bounded(fn, *args, **kwargs):
    """Call fn; fail if it took longer than CALL_BOUND; return (result or exception)."""
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # returned, to be checked by the test
        result = exc
    took = time.monotonic() - started
    assert took < CALL_BOUND, f"{fn.__name__} took {took:.3f} s with the server away"
    return result


def check_away(a: herdcache.TieredCache, epoch_before: int) -> None:
    until(lambda: not a.tracking and a.epoch > epoch_before, "the L1 to be flushed after tracking was lost")
    assert isinstance(bounded(a.get, "k"), RemoteUnavailable)  # flushed from the L1, and Redis is away
    error = bounded(a.set, "k", "during")
    assert isinstance(error, RemoteUnavailable) and isinstance(error, ConnectionError)
    assert "Redis at unix:" in str(error)
    assert isinstance(bounded(a.get, "never-seen"), RemoteUnavailable)
    calls = []
    assert bounded(a.get_or_compute, "local", lambda: calls.append(1) or "computed here", ttl=60) == "computed here"
    assert bounded(a.get_or_compute, "local", lambda: calls.append(1) or "again", ttl=60) == "computed here"
    assert calls == [1]  # kept in the L1 meanwhile


def check_back(a: herdcache.TieredCache, b: herdcache.TieredCache) -> None:
    until(lambda: a.tracking and b.tracking, "tracking to come back on both hosts")
    until(lambda: succeeds(a.set, "k", "after"), "a write to succeed again")
    assert a.get("local") is None  # the local-only value went with the flush
    until(lambda: b.get("k") == "after", "b to read the write made after recovery")
    assert b.get_or_compute("c", lambda: "fleet", ttl=60) == "fleet" and a.get("c") == "fleet"


def test_redis_killed_and_restarted(pair, own_redis) -> None:
    a, b = pair
    a.set("k", "before")
    assert b.get("k") == "before"
    epoch = a.epoch

    own_redis.kill()
    check_away(a, epoch)
    own_redis.start()
    check_back(a, b)


def test_redis_stopped_past_the_timeouts(pair, own_redis) -> None:
    a, b = pair
    a.set("k", "before")
    epoch = a.epoch
    before = a.stats()["tier"]

    own_redis.pause()
    try:
        # The tracker notices the silence within a heartbeat and a timeout,
        # suspends the L1, and flushes it once the grace passed unanswered.
        check_away(a, epoch)
        after = a.stats()["tier"]
        assert after["suspensions"] > before["suspensions"] and after["resumes"] == before["resumes"]
    finally:
        own_redis.resume()
    check_back(a, b)


def test_reconnects_back_off(pair, own_redis) -> None:
    """While the server is down, the host's processes fail fast between
    attempts instead of each waiting for a timeout, and the pause grows."""
    a, _ = pair
    own_redis.kill()
    until(lambda: not a.tracking, "tracking to be lost")
    pauses = []
    for _ in range(4):
        until(lambda: not a._remote.is_down(), "the breaker to let one attempt through")
        assert isinstance(bounded(a.set, "k", 1), RemoteUnavailable)
        pauses.append(a._remote._pause.load())
        assert isinstance(bounded(a.get, "x"), RemoteUnavailable)
    assert pauses == sorted(pauses) and pauses[-1] > pauses[0]


def test_a_lock_taken_by_a_late_request_is_freed_without_another_call(pair, own_redis) -> None:
    """Host a's lock request times out on a stopped server, which runs it
    when continued: the lock is a's, for the whole lease, though a computed
    locally and makes no further call.  a frees it by itself, so host b
    computes the key rather than wait through a's lease (``wait_timeout``,
    well below the lease, fails the test if it waits)."""
    a, b = pair
    # A pooled connection (the request goes out during the pause) and the
    # script loaded (EVALSHA, not refused as unknown when the server runs it).
    assert a.get_or_compute("warm", lambda: 0, ttl=60) == 0
    own_redis.pause()
    try:
        assert a.get_or_compute("k", lambda: "local to a", ttl=60, lease=60) == "local to a"
    finally:
        own_redis.resume()
    assert b.get_or_compute("k", lambda: "b's", ttl=60, wait_timeout=10) == "b's"


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_fleet_rides_out_a_server_killed_or_stopped_mid_run(own_redis, segdir, prefix, fault) -> None:
    """2 hosts x 3 processes call get_or_compute and set in a loop while the
    server is SIGKILLed and restarted (or SIGSTOPped and continued): no call
    takes longer than its timeouts, the only errors are RemoteUnavailable,
    every host flushes its L1 (epoch), and afterwards writes and reads flow
    between the hosts again."""
    from _fleet import Fleet

    fleet = Fleet(2, 3, segdir, prefix, own_redis.socket, timeout=TIMEOUT)
    try:
        fleet.all_tracking()
        epochs = {h: fleet.l1(h).segment.counter("tier.epoch").load() for h in fleet.hosts}
        live = {h: fleet.l1(h).segment.counter("tier.live") for h in fleet.hosts}
        for w in fleet.workers:
            w.send("soak")
        assert all(w.receive() == ("soaking",) for w in fleet.workers)

        own_redis.kill() if fault == "kill" else own_redis.pause()
        until(lambda: all(c.load() == 0 for c in live.values()), "every host to notice the lost tracking")
        own_redis.start() if fault == "kill" else own_redis.resume()
        until(lambda: all(c.load() != 0 for c in live.values()), "every host's tracking to come back")

        for w in fleet.workers:
            w.send("stop")
        reports = [w.receive() for w in fleet.workers]
        assert all(r[0] == "soaked" and not r[3] for r in reports), reports
        assert all(r[1] > 0 for r in reports) and sum(r[2] for r in reports) > 0, reports
        assert max(r[4] for r in reports) < CALL_BOUND, reports
        for h in fleet.hosts:
            assert fleet.l1(h).segment.counter("tier.epoch").load() > epochs[h]
        writer, reader = fleet.of("host0")[0], fleet.of("host1")[0]
        until(lambda: writer.ask("set", "after", "recovered", 60)[0] == "done", "a write to go through")
        assert reader.ask("await", "after", "recovered", 0.0)[0] == "seen"
    finally:
        fleet.stop()
