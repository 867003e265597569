"""A failing computation in one process: the key is always freed.

What users rely on: whatever the computation raises, even an exception
whose ``str()`` itself fails, the caller gets that exception, the callers
waiting for it get it too, and the key is free for the next call at once
(not stuck until the lease runs out).
"""

from __future__ import annotations

import threading
import time

import pytest

import herdcache


class BrokenMessage(Exception):
    """An exception whose __str__ raises (it reads an attribute never set)."""

    def __str__(self) -> str:
        return self.detail  # type: ignore[attr-defined]


@pytest.fixture
def cache():
    cache = herdcache.Cache(size="4MiB")
    yield cache
    cache.close()


def test_an_exception_whose_str_fails_still_reaches_waiters_and_frees_the_key(cache) -> None:
    """The owner raises its own BrokenMessage, a waiting thread gets a
    BrokenMessage too, and the next call computes without waiting."""
    waiter_got = []

    def waiter() -> None:
        try:
            cache.get_or_compute("k", pytest.fail, ttl=60)
        except Exception as exc:  # what the waiter receives
            waiter_got.append(type(exc))

    def compute() -> str:
        compute.thread = threading.Thread(target=waiter)
        compute.thread.start()
        while cache.stats()["waits"] == 0:  # until the waiter sleeps on this round
            time.sleep(0.001)
        raise BrokenMessage()

    with pytest.raises(BrokenMessage):
        cache.get_or_compute("k", compute, ttl=60)
    compute.thread.join()
    assert waiter_got == [BrokenMessage]

    waits = cache.stats()["waits"]
    assert cache.get_or_compute("k", lambda: "next", ttl=60) == "next"
    assert cache.stats()["waits"] == waits
