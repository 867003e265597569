"""Torn reads (RELIABILITY scenario 18): readers racing writers never get a
value that is not exactly one some writer stored.

Writers set, replace, add and (in all but one test) delete self-checking values (a sequence
number, filler, and a keyed digest of both) of 16 bytes to 20 KB on a
few keys, so blocks are freed and reused all the time; readers get (or
lookup) those keys in a loop and verify every value.  A tiny cache (one
stripe, constant eviction) makes reuse of the block a reader is copying as
likely as it can be.

Every test reads with eight processes at once (READERS, the bound of
RELIABILITY scenario 4).  The default run reads 25,000 values per reader
(``HERDCACHE_TORN_READS``); the long form (``-m stress``) runs four writers
and eight readers for ``HERDCACHE_STRESS_SECONDS`` (60) per cache size.
"""

from __future__ import annotations

import multiprocessing

import pytest
from cache_helpers import env_number, open_for
from cache_scenarios import READERS, SOAK_SIZES, race, soak
from helpers import CONTEXTS

#: Reads per reader in the default run.
READS = int(env_number("HERDCACHE_TORN_READS", 25_000))


@pytest.mark.parametrize("size", ["1MiB", "16MiB"])
@pytest.mark.parametrize("start_method", CONTEXTS)
def test_readers_never_see_a_torn_value(start_method: str, size: str, segment_name: str) -> None:
    """Two writers, eight readers (half with get, half with lookup): zero bad reads."""
    ctx = multiprocessing.get_context(start_method)
    with open_for(ctx, segment_name, size=size, serializer="raw") as cache:
        race(ctx, cache, writers=2, readers=READERS, reads=READS, seconds=0.0)


def test_readers_never_see_a_torn_value_without_deletes(segment_name: str) -> None:
    """Only sets, replaces and adds: every freed block is an overwritten or
    evicted one.  A delete moves the readers' epoch by a path of its own,
    so the mix above would hide an overwrite or eviction that forgot to."""
    ctx = multiprocessing.get_context("fork")
    with open_for(ctx, segment_name, size="1MiB", serializer="raw") as cache:
        race(ctx, cache, writers=2, readers=READERS, reads=READS, seconds=0.0, deletes=0.0)


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", SOAK_SIZES)
def test_readers_never_see_a_torn_value_soak(size: str) -> None:
    """Four writers, eight readers, HERDCACHE_STRESS_SECONDS: zero bad reads."""
    soak(size, env_number("HERDCACHE_STRESS_SECONDS", 60))
