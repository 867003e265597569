"""Seconds at the edges: inf waits or keeps for good, NaN is refused with a
ValueError, and a huge number saturates; none reaches the core as an
out-of-range integer (casting inf to uint64_t is undefined behaviour)."""

from __future__ import annotations

import math

import pytest

from herdcache import Cache, Segment, _core, errors

NAN = math.nan
INF = math.inf
CACHE_BYTES = 1 << 20


@pytest.fixture
def core(named: Segment) -> _core.Cache:
    """The binding's Cache, to pass seconds that herdcache.Cache checks first."""
    offset, _ = named.alloc("c", CACHE_BYTES, _core.KIND_CACHE)
    return _core.Cache(named, offset, CACHE_BYTES)


def test_lock_and_condition_timeouts(named: Segment) -> None:
    lock = named.lock("l")
    assert lock.acquire(timeout=INF)
    lock.release()
    assert lock.acquire(timeout=1e300)
    lock.release()
    with pytest.raises(ValueError, match="NaN"):
        lock.acquire(timeout=NAN)
    cond = named.condition("c")
    with cond:
        with pytest.raises(ValueError, match="NaN"):
            cond.wait(NAN)
    assert not lock.locked()


def test_attach_timeout(named: Segment) -> None:
    Segment.attach("seg", dir=named.dir, timeout=INF).close()
    with pytest.raises(ValueError, match="NaN"):
        Segment.attach("seg", dir=named.dir, timeout=NAN)


def test_store_ttls_and_stale_ttl(core: _core.Cache) -> None:
    for ttl in (INF, 1e300):
        assert core._store("k", b"v", 0, ttl) > 0
        assert core._lookup("k")[2] is None  # never expires
    assert core._store("gone", b"v", 0, -INF) > 0
    assert core._get("gone", 0) is None  # expired at once
    for bad in (dict(ttl=NAN), dict(stale_ttl=NAN), dict(stale_ttl=INF), dict(stale_ttl=-1.0)):
        with pytest.raises(ValueError):
            core._store("bad", b"v", 0, **bad)
    assert core._lookup("bad") is None


def test_flight_lease_and_error_ttl(core: _core.Cache) -> None:
    for lease in (NAN, INF, 0.0, -1.0):
        with pytest.raises(ValueError, match="lease"):
            core._flight_begin("k", lease)
    begun = core._flight_begin("k", 30.0)
    outcome, round_ = begun[0], begun[3]
    assert outcome == "compute"
    with pytest.raises(ValueError, match="NaN"):
        core._flight_abort("k", round_, b"err", NAN)
    assert core._flight_abort("k", round_, b"err", INF)
    assert core._flight_begin("k", 30.0)[0] == "failed"  # remembered for good


def test_cache_set_refuses_nan() -> None:
    with Cache(size="4MiB") as cache:
        with pytest.raises(errors.InvalidArgument):
            cache.set("k", 1, ttl=NAN)
