"""stale_if_error: when Redis is killed or stopped, a read falls back to
the L1's copy of the key, but only for a cache that opted in, and only
for copies that expired (by their ttl, or by the flush that follows a
lost tracking connection) within that window; everything else still
raises the clear RemoteUnavailable.  While Redis answers, no expired copy
is ever served."""

from __future__ import annotations

import pytest
from _fleet import settle, succeeds, until

import herdcache
from herdcache.errors import InvalidArgument, RemoteUnavailable

TIMEOUT = 0.25
WINDOW = 30.0


@pytest.fixture
def hosts(own_redis, segdir, prefix):
    """Two hosts on a server of this test's own: "opted" with
    stale_if_error, "plain" without."""
    made = {}
    for name, window in (("opted", WINDOW), ("plain", 0.0)):
        made[name] = herdcache.TieredCache(
            name, "4MiB", remote=own_redis.client(), prefix=prefix, dir=segdir, timeout=TIMEOUT,
            stale_if_error=window,
        )
    for cache in made.values():
        until(lambda c=cache: c.tracking, f"{cache.name} tracking")
    yield made
    for cache in made.values():
        cache.close()


def served_stale(cache: herdcache.TieredCache) -> int:
    return cache.stats()["tier"]["stale_if_error"]


def lose(cache: herdcache.TieredCache, epoch: int) -> None:
    until(lambda: not cache.tracking and cache.epoch > epoch, f"{cache.name} to flush its L1 after losing tracking")


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_read_falls_back_to_the_flushed_copy_only_where_opted_in(hosts, own_redis, fault) -> None:
    opted, plain = hosts["opted"], hosts["plain"]
    opted.set("k", "kept", ttl=60)
    settle(opted, plain)
    for cache in (opted, plain):
        assert cache.get("k") == "kept"  # both hosts hold a copy
    epochs = {c.name: c.epoch for c in (opted, plain)}

    own_redis.kill() if fault == "kill" else own_redis.pause()
    try:
        for cache in (opted, plain):
            lose(cache, epochs[cache.name])
        assert opted.get("k") == "kept"
        assert opted["k"] == "kept" and "k" in opted
        assert served_stale(opted) == 3
        assert opted.get_many(["k", "never-seen"]) == {"k": "kept"}
        with pytest.raises(RemoteUnavailable, match="Redis at unix:"):
            plain.get("k")  # no window: the flushed copy is never served
        with pytest.raises(RemoteUnavailable):
            opted.get("never-seen")  # nothing to fall back to
        with pytest.raises(RemoteUnavailable):
            opted.set("k", "new")  # writes still fail clearly
    finally:
        own_redis.start() if fault == "kill" else own_redis.resume()

    until(lambda: opted.tracking and plain.tracking, "tracking to come back")
    until(lambda: succeeds(plain.set, "k", "after"), "a write to go through again")
    # opted's breaker may still be open after a timeout of its own: while it
    # is, a read falls back on purpose; this asks what happens once it closed.
    until(lambda: not opted.stats()["tier"]["remote_down"], "opted's breaker to close")
    served = served_stale(opted)
    assert opted.get("k") == "after" and plain.get("k") == "after"
    assert served_stale(opted) == served  # Redis answers: no fallback


def test_the_window_ends_on_time_however_often_it_is_used(own_redis, segdir, prefix) -> None:
    """A window of 2 s (real time: the test clock would skew this whole
    process): while the server is stopped, the copy is served, again and
    again (each fallback through a flight puts it back in the L1), and
    then no more: a window that moved with each use would never end."""
    short = herdcache.TieredCache(
        "short", "4MiB", remote=own_redis.client(), prefix=prefix, dir=segdir, timeout=TIMEOUT, stale_if_error=2
    )
    try:
        until(lambda: short.tracking, "tracking")
        short.set("k", "v", ttl=60)
        epoch = short.epoch
        own_redis.pause()
        try:
            lose(short, epoch)
            assert short.get("k") == "v"
            until(lambda: not _serves(short, "k"), "the 2 s window to end while the copy is read in a loop")
            assert served_stale(short) > 1
        finally:
            own_redis.resume()
    finally:
        short.close()


def _serves(cache: herdcache.TieredCache, key: str) -> bool:
    try:
        return bool(cache.get(key) == "v")
    except RemoteUnavailable:
        return False


def test_an_expired_copy_is_never_served_while_redis_answers(own_redis, segdir, prefix) -> None:
    opted = herdcache.TieredCache(
        "opted", "4MiB", remote=own_redis.client(), prefix=prefix, dir=segdir, stale_if_error=WINDOW, local_ttl=0.2
    )
    try:
        until(lambda: opted.tracking, "tracking")
        opted.set("gone", "old", ttl=60)
        own_redis.client().delete(opted._remote.value_key("gone"))  # expired in Redis, say
        until(lambda: _expired(opted, "gone"), "the tracker to drop the L1 copy")
        assert opted.get("gone") is None and served_stale(opted) == 0
        # A copy whose L1 ttl (local_ttl) ran out is read again from Redis.
        opted.set("ttl", "v1", ttl=600)
        until(lambda: _expired(opted, "ttl"), "the L1 copy to pass its local_ttl")
        gets = own_redis.commandstats().get("get", 0)
        assert opted.get("ttl") == "v1"
        assert own_redis.commandstats().get("get", 0) == gets + 1 and served_stale(opted) == 0
    finally:
        opted.close()


def _expired(cache: herdcache.TieredCache, key: str) -> bool:
    found = cache._lookup(key)
    return found is None or found[2] <= 0


def test_get_or_compute_serves_its_stale_copy_rather_than_computing(hosts, own_redis) -> None:
    plain = hosts["plain"]
    assert plain.get_or_compute("report", lambda: "v1", ttl=10, stale_ttl=60) == "v1"
    settle(plain)
    # The copy is in the L1 now (read again from Redis, with its stale
    # window, had the invalidation of this host's own write dropped it).
    assert plain.get_or_compute("report", lambda: "unused", ttl=10, stale_ttl=60) == "v1"
    epoch = plain.epoch
    own_redis.kill()
    try:
        lose(plain, epoch)
        calls = []
        # stale_ttl opts this call in: the copy that lost its freshness in
        # the flush is served, and nothing is computed.
        assert plain.get_or_compute("report", lambda: calls.append(1) or "v2", ttl=10, stale_ttl=60) == "v1"
        assert calls == [] and served_stale(plain) == 1
        # Without stale_ttl (and no stale_if_error), it computes on this host.
        assert plain.get_or_compute("other", lambda: calls.append(1) or "local", ttl=10) == "local"
        assert calls == [1]
    finally:
        own_redis.start()


def test_stale_if_error_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="stale_if_error"):
        herdcache.TieredCache("x", remote=None, stale_if_error=-1)  # type: ignore[arg-type]
