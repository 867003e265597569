"""TieredCache in one process against a real redis-server: the Cache API
with Redis as the truth, keys under the prefix, serializer tags, the L1's
ttl, and get_or_compute's options across the tier.

"Another host" here is a second TieredCache with another L1 segment and
the same prefix: its own tracker thread, its own L1.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from _fleet import settle, until

import herdcache
from herdcache import errors
from herdcache.errors import InvalidArgument, SerializationError


def reaches(cache: herdcache.TieredCache, key: str, expected, default=None) -> None:
    """Another host's write reaches ``cache`` once its tracker heard of it
    (milliseconds): read until it does."""
    until(lambda: cache.get(key, default) == expected, f"{key!r} to read {expected!r} on {cache.name}")


def test_the_mapping_api_goes_through_redis(host, redis_server, prefix) -> None:
    """Each operation on host a acts on Redis; host b (which read the keys
    before) sees its effect; a reads its own writes at once."""
    a, b = host("a"), host("b")
    a.set("user:1", {"name": "Ada"}, ttl=60)
    assert b.get("user:1") == {"name": "Ada"} and b["user:1"] == {"name": "Ada"} and "user:1" in b
    assert redis_server.client().exists(f"{prefix}v:user:1")
    assert not a.add("user:1", "other") and a.add("user:2", "two")
    assert b.get("user:2") == "two"
    assert a.replace("user:2", "deux") and not a.replace("user:3", "trois")
    assert a.get("user:2") == "deux"
    reaches(b, "user:2", "deux")
    assert b.get_many(["user:1", "user:2", "user:3"]) == {"user:1": {"name": "Ada"}, "user:2": "deux"}
    c = host("c")  # an empty L1: get_many's misses go to Redis in one round trip
    before = redis_server.commandstats().get("get", 0)
    assert c.get_many(["user:1", "user:2", "user:3"]) == {"user:1": {"name": "Ada"}, "user:2": "deux"}
    assert redis_server.commandstats().get("get", 0) == before + 3
    assert c.get_many(["user:1", "user:2"]) == {"user:1": {"name": "Ada"}, "user:2": "deux"}
    assert redis_server.commandstats().get("get", 0) == before + 3  # now from c's L1
    b.set_many({"n": 1, "m": 2}, ttl=60)
    assert a.get("n") == 1 and a.get("m") == 2
    assert b.incr("n", 41) == 42 and b.get("n") == 42
    reaches(a, "n", 42)
    assert a.decr("n") == 41
    reaches(b, "n", 41)
    assert 59 < b.ttl("n") <= 60
    assert a.touch("n", 5) and b.ttl("n") <= 5
    assert b.delete("user:2") and b.get("user:2") is None and not b.delete("user:2")
    reaches(a, "user:2", None)
    assert a.delete_many(["n", "m", "zz"]) == 2 and a.get("m", "gone") == "gone"
    reaches(b, "m", "gone", "gone")
    with pytest.raises(KeyError):
        a.incr("absent")
    with pytest.raises(KeyError):
        del a["absent"]
    a.set("s", "text")
    with pytest.raises(TypeError):
        a.incr("s")


def test_clear_removes_only_this_prefix_with_scan_and_unlink(host, redis_server, prefix) -> None:
    a = host("a")
    other = host("o", prefix=prefix + "x*[?]:")  # glob characters are escaped
    client = redis_server.client()
    client.set("unrelated", "stays")
    for i in range(1200):  # more than one SCAN batch
        a.set(f"k{i}", i)
    other.set("k0", "other")
    epoch = a.epoch
    client.config_resetstat()

    a.clear()

    assert a.get("k5") is None and other.get("k0") == "other" and client.get("unrelated") == b"stays"
    assert not [k for k in client.scan_iter(match=prefix + "v:*")]
    stats = redis_server.commandstats()
    assert stats.get("scan", 0) >= 2 and stats.get("unlink", 0) >= 2
    assert not {"keys", "flushdb", "flushall"} & set(stats)
    assert a.epoch > epoch


def test_an_l1_hit_touches_no_network(host, redis_server) -> None:
    a, b = host("a"), host("b")
    a.set("hot", list(range(10)))
    settle(b)  # else the invalidation of a's write may come after b's fill, and drop it
    assert b.get("hot") == list(range(10))  # fills b's L1
    before = redis_server.commandstats()
    for _ in range(100):
        assert b.get("hot") == list(range(10))
    assert redis_server.commandstats() == {**before, "info": before.get("info", 0) + 1}


def test_the_decoded_layer_serves_no_value_another_host_changed(host, redis_server) -> None:
    """With local_items, a hit is the same object each time and touches no
    network, and once the host's tracker has heard of another host's write
    or delete, the next get serves the new state, never the kept object."""
    a, b = host("a"), host("b", local_items=100)
    a.set("k", {"v": 1})
    settle(a, b)
    assert b.get("k") == {"v": 1}  # from Redis into b's L1
    kept = b.get("k")  # an L1 hit: the layer keeps the decoded object
    before = redis_server.commandstats()
    assert b.get("k") is kept, "not served by the decoded layer"
    assert redis_server.commandstats() == {**before, "info": before.get("info", 0) + 1}

    a.set("k", {"v": 2})
    settle(a, b)  # b's tracker has dropped its L1 copy
    assert b.get("k") == {"v": 2}
    a.delete("k")
    settle(a, b)
    assert b.get("k", "absent") == "absent"


def test_the_l1_keeps_a_value_for_redis_remaining_ttl_capped_by_local_ttl(host) -> None:
    """b reads what a wrote: its L1 copy lives Redis's remaining ttl (2 s
    left of 2), at most local_ttl (5 s of 100).  The bounds allow for the
    time the test itself took, measured, and for Redis's whole milliseconds
    counted from the start of its event loop's turn."""
    a, b = host("a", local_ttl=5), host("b", local_ttl=5)
    started = time.monotonic()
    a.set("long", 1, ttl=100)
    a.set("short", 2, ttl=2)
    # b's tracker must have heard of these writes before b reads: else the
    # invalidations, arriving after b's fill, drop its copies (one more
    # read later, never a stale one; see _tracking, "The fill fence").
    settle(b)
    epoch = b.epoch
    assert b.get("long") == 1 and b.get("short") == 2
    long, short = b._lookup("long"), b._lookup("short")
    took = time.monotonic() - started + 0.01
    assert b.epoch == epoch, "b's tracking was lost meanwhile: its fills kept 0.1 s (UNTRACKED_TTL)"
    assert long is not None and short is not None, "b's fills were dropped after its tracker settled"
    assert 5 - took <= long[2] <= 5
    assert 2 - took <= short[2] <= 2


def test_a_host_with_another_serializer_refuses_cleanly(host, redis_server, prefix) -> None:
    host("a").set("k", {"v": 1})
    raw = host("r", serializer="raw")
    with pytest.raises(SerializationError, match="format"):
        raw.get_or_compute("k", lambda: b"x")
    with pytest.raises(SerializationError, match="format"):
        raw.get("k")
    with pytest.raises(SerializationError, match="format"):
        raw.get_many(["k"])
    redis_server.client().set(f"{prefix}v:foreign", b"not ours")
    with pytest.raises(SerializationError, match="not written by a herdcache"):
        raw.get("foreign")


def test_arguments_are_checked(redis_server) -> None:
    with pytest.raises(InvalidArgument, match="prefix"):
        herdcache.TieredCache(remote=redis_server.client())
    with pytest.raises(InvalidArgument, match="local_ttl"):
        herdcache.TieredCache("x", remote=redis_server.client(), local_ttl=0)


def test_a_failure_is_shared_and_negative_ttl_caches_it_fleet_wide(host) -> None:
    a, b = host("a"), host("b")
    calls = []

    def fail() -> None:
        calls.append(1)
        raise LookupError("no price")

    with pytest.raises(LookupError, match="no price"):
        a.get_or_compute("p", fail, negative_ttl=30)
    with pytest.raises(LookupError, match="no price"):
        b.get_or_compute("p", fail, negative_ttl=30)
    assert len(calls) == 1
    with pytest.raises(LookupError):
        a.get_or_compute("q", fail)
    assert b.get_or_compute("q", lambda: "fine") == "fine"  # not cached without negative_ttl


def test_stale_ttl_serves_the_old_value_while_one_host_refreshes(host, redis_server, prefix) -> None:
    a, b = host("a"), host("b")
    a.get_or_compute("s", lambda: "v1", ttl=0.2, stale_ttl=60)
    until(lambda: _fresh_left(redis_server, prefix, "s") <= 0, "s to go stale in Redis")
    b._l1_delete("s")  # b's L1 let go of it too (its local copy expired)
    # a holds the lock for a refresh under way: b gets the stale value at once
    state, token, _ = a._remote.read_or_lock("s", 30, _header(redis_server, prefix, "s"))
    assert state == 1
    assert b.get_or_compute("s", lambda: "never", ttl=60, stale_ttl=60) == "v1"
    assert a._remote.publish("s", token, _record(a, "v2"), 60_000)
    until(lambda: b.get("s") == "v2", "b to see the refreshed value")


def _fresh_left(redis_server, prefix: str, key: str) -> float:
    from herdcache._remote import decode

    client = redis_server.client()
    name = f"{prefix}v:{key}"
    return decode(client.get(name), client.pttl(name), key).fresh_seconds


def _header(redis_server, prefix: str, key: str) -> bytes:
    return redis_server.client().getrange(f"{prefix}v:{key}", 0, 19)


def _record(cache: herdcache.TieredCache, value) -> bytes:
    from herdcache._remote import KIND_VALUE, encode

    return encode(KIND_VALUE, cache._tag, cache._dumps(value))


def test_early_refresh_recomputes_before_expiry_across_hosts(host) -> None:
    a, b = host("a"), host("b")
    a.get_or_compute("e", lambda: time.sleep(0.05) or "v1", ttl=0.3)
    calls = []
    deadline = time.monotonic() + 10
    # b keeps reading with early_refresh: some read before expiry recomputes
    while not calls and time.monotonic() < deadline:
        assert b.get_or_compute("e", lambda: calls.append(1) or "v2", ttl=60, early_refresh=50.0) in ("v1", "v2")
    assert calls == [1]
    until(lambda: a.get("e") == "v2", "a to see the early refresh")


def test_aget_or_compute_and_memoize_use_the_tier(host) -> None:
    a, b = host("a"), host("b")

    async def build() -> str:
        await asyncio.sleep(0)
        return "async value"

    assert asyncio.run(a.aget_or_compute("ak", build, ttl=60)) == "async value"
    assert b.get("ak") == "async value"
    calls = []

    @a.memoize(ttl=60)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(7) == 49 and square(7) == 49
    assert calls == [7]
    assert b.get(square.cache_key(7)) == 49


def test_stats_report_the_tier(host) -> None:
    a = host("a")
    a.set("k", 1)
    tier = a.stats()["tier"]
    assert tier["tracking"] and tier["epoch"] >= 1 and not tier["remote_down"]


def test_a_hosts_own_write_stays_in_its_l1_until_another_host_writes(host, redis_server) -> None:
    """A host keeps what it wrote (no read back from Redis), and a later
    write by another host still replaces it there within the bound (the
    own-write mark never spares a later change)."""
    from test_tier_fleet import STALE_BOUND

    a, b = host("a"), host("b")
    for i in range(1, 40):
        a.set("k", i)
        assert a.get("k") == i
        b.set("k", -i)
        until(lambda i=i: a.get("k") == -i, f"a to read b's write {-i}", timeout=STALE_BOUND)
        assert b.get("k") == -i
    for i in range(20):
        epoch = a.epoch
        a.set("mine", i)
        until(lambda: a._lookup(b"\x00herdcache-own:mine") is None, "a's tracker to hear of its own write")
        before = redis_server.commandstats().get("get", 0)
        assert a.get("mine") == i
        read_back = redis_server.commandstats().get("get", 0) != before
        # Only a flush (a's tracking lost meanwhile, on a loaded machine)
        # may take an own write out of the L1, whenever the tracker hears
        # of it: before the writer's L1 store, between it and the mark's
        # csn, or after.
        assert not read_back or a.epoch != epoch, f"own write {i} was read back from Redis"


def test_a_writer_killed_after_its_redis_write_leaves_no_stale_copy(host) -> None:
    """A process of host a marks its write pending, writes to Redis and is
    killed before its L1 store: its mark must not keep a's old copy
    against the change (here b's write stands for it, as any change the
    mark could be taken for)."""
    from test_tier_fleet import STALE_BOUND

    from herdcache._tracking import mark_own_write

    a, b = host("a"), host("b")
    a.set("k", "old")
    settle(a)
    assert a.get("k") == "old" and a._lookup("k") is not None
    mark_own_write(a, b"k")  # what the killed writer left behind
    b.set("k", "new")
    until(lambda: a.get("k") == "new", "a to drop its old copy of k", timeout=STALE_BOUND)


def test_compare_and_set_is_refused_clearly(host) -> None:
    """A token would name one host's L1 copy, never the fleet's value: the
    tier refuses gets/compare_and_set/compare_and_delete instead of
    quietly writing one host's L1 (or failing inside redis-py)."""
    a = host("a")
    a.set("k", 1)
    for call in (lambda: a.gets("k"), lambda: a.compare_and_set("k", 2, 1), lambda: a.compare_and_delete("k", 1)):
        with pytest.raises(errors.NotSupported, match="get_or_compute"):
            call()
    assert a.get("k") == 1


def test_a_server_before_6_0_is_refused_and_this_one_is_not(redis_server) -> None:
    """Redis 6.0 brought what the tier needs (CLIENT TRACKING, RESP3);
    every server kind the tests run on passes, an older version is
    refused with the fix (construction checks it when the server answers)."""
    from herdcache._remote import server_refusal

    info = redis_server.client().info("server")
    assert server_refusal(info) is None
    refusal = server_refusal({**info, "redis_version": "5.0.14"})
    assert refusal is not None and "Redis 5.0.14 is too old" in refusal and "upgrade" in refusal
