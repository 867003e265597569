"""A named Cache pickles by name: a spawn or forkserver child, or a
ProcessPoolExecutor initializer, receives the same cache, opened the same
way.  An anonymous cache refuses to pickle with a message saying to name it.
And close(): idempotent, and a closed cache raises SegmentClosed."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

import cache_workers
import pytest
from helpers import HANG, join_all, start

import herdcache
from herdcache import Cache
from herdcache.errors import SegmentClosed


@pytest.fixture(params=("spawn", "forkserver"))
def ctx(request: pytest.FixtureRequest) -> BaseContext:
    """The start methods that cannot inherit an anonymous segment."""
    return multiprocessing.get_context(request.param)


@pytest.fixture
def cache(segdir: str) -> Iterator[Cache]:
    """A named cache opened with options a child must get back."""
    opened = Cache("pickled", "4MiB", dir=segdir, default_ttl=300, serializer="pickle")
    yield opened
    opened.close()


def test_a_child_gets_the_same_cache_opened_the_same_way(ctx: BaseContext, cache: Cache) -> None:
    cache.set("from-parent", {1, 2})
    ours, theirs = ctx.Pipe()
    child = start(ctx, cache_workers.echo_through_cache, cache, theirs)
    assert ours.poll(HANG), "the child sent nothing"
    assert ours.recv() == ({1, 2}, "pickled", 300, "pickle")
    assert ours.poll(HANG) and ours.recv() == "stored"
    join_all([child])
    assert cache.get("from-child") == {"tuple": (1, 2)}
    assert not cache.closed  # the child's close() closed the child's view only


def test_a_pool_initializer_shares_one_cache_between_workers(ctx: BaseContext, cache: Cache) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=cache_workers.init_pool_worker, initargs=(cache,)) as pool:
        results = list(pool.map(cache_workers.square_once, [3, 4, 3, 4], timeout=HANG))
    assert results == [9, 16, 9, 16]
    assert cache.get("square:3") == 9 and cache.get("square:4") == 16
    assert cache.stats()["computes"] == 2  # each key computed once across the pool


def test_an_anonymous_cache_says_to_use_a_name() -> None:
    with pytest.raises(TypeError, match=r"give it a name \(Cache\('myapp'"):
        pickle.dumps(Cache(size="4MiB"))


def test_a_cache_opened_on_a_named_segment_pickles_by_that_name(segdir: str) -> None:
    with herdcache.Segment.create("seg", "4MiB", dir=segdir) as seg:
        cache = Cache(segment=seg)
        cache.set("k", "v")
        copy = pickle.loads(pickle.dumps(cache))
        assert (copy.name, copy.get("k")) == ("seg", "v")
        copy.close()
        assert cache.get("k") == "v"  # the copy's segment view was its own


def test_close_is_idempotent_and_a_closed_cache_raises(cache: Cache) -> None:
    cache.set("k", 1)
    cache.close()
    cache.close()
    assert cache.closed
    for use in (lambda: cache.get("k"), lambda: cache.set("k", 2), lambda: len(cache), lambda: cache.stats()):
        with pytest.raises(SegmentClosed):
            use()
    assert "closed" in repr(cache)
    reopened = Cache("pickled", dir=cache.segment.dir, serializer="pickle")
    assert reopened.get("k") == 1  # closing one view loses nothing
    reopened.close()


def test_a_pickled_cache_keeps_its_local_layer(segment_name: str) -> None:
    """The process that unpickles a cache opens it as it was opened here,
    the per-process decoded layer included."""
    with herdcache.Cache(segment_name, size="4MiB", local_items=5, local_values="immutable") as cache:
        with pickle.loads(pickle.dumps(cache)) as copy:
            assert copy.stats()["local"]["max_items"] == 5
            copy["k"] = (1, 2)
            assert copy["k"] is copy["k"]  # kept: a tuple of ints is immutable
