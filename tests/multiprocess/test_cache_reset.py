"""RELIABILITY.md scenario 3, the poison/reset path, across real processes.

A stripe's rebuild repairs whatever a dead writer left in it, but it trusts
the geometry; what no rebuild vouches for is the cache's header.  When the
header is damaged, the next process to open the cache resets it in place
(table.c, reset_cache()): every stripe emptied under its lock, the header
written anew, the generation bumped.  The processes that were attached go
on without an error and without re-attaching, and none of them ever reads
an entry of the old image again, not even from its per-process decoded
layer; one writing and reading all along sees only whole values.
"""

from __future__ import annotations

import multiprocessing
import random
import struct
from multiprocessing.connection import Connection

import pytest
from cache_helpers import checked_value, verify_value
from helpers import HANG, join_all, receive, start

import herdcache
from herdcache import Cache, errors

KEYS = [f"key:{i}" for i in range(50)]
MAGIC_AT = 0  # hc_cache_header.ch_magic
NSTRIPES_AT = 16 + 8  # ch_layout.cl_nstripes (after magic, version, init lock)
DAMAGE = {
    "magic": (MAGIC_AT, b"\xde\xad\xbe\xef"),
    "geometry": (NSTRIPES_AT, struct.pack("<I", 3)),
}


def cache_offset(cache: Cache) -> int:
    """Where the cache structure starts in its segment."""
    return next(entry.offset for entry in cache.segment.structs() if entry.name == "cache")


def attached_reader(name: str, conn: Connection) -> None:
    """Child: fill its decoded layer with the old values, then, after the
    reset, find every key absent, write and read new values."""
    cache = Cache(name, local_items=100)
    assert all(cache.get(key) == ["old", key] for key in KEYS), "the old values were not there"
    assert all(cache.get(key) == ["old", key] for key in KEYS)  # now local hits
    conn.send("read")
    assert conn.poll(HANG), "the parent never said the reset was done"
    conn.recv()
    seen = {key: cache.get(key) for key in KEYS}
    assert seen == dict.fromkeys(KEYS), f"read after the reset: {[k for k, v in seen.items() if v is not None]}"
    for key in KEYS:
        cache.set(key, ["new", key])
    assert all(cache.get(key) == ["new", key] for key in KEYS)
    cache.check()
    conn.send(cache.stats()["generation"])


def busy_writer(name: str, conn: Connection, seed: int) -> None:
    """Child: write and read self-checked values until told to stop; every
    value read must be whole."""
    cache = Cache(name, serializer="raw")
    rng = random.Random(seed)
    conn.send("started")
    n = 0
    while not conn.poll():
        key = b"busy:%d" % rng.randrange(64)
        cache.set(key, checked_value(key, n, rng.randrange(16, 2000), rng))
        key = b"busy:%d" % rng.randrange(64)
        value = cache.get(key)
        assert value is None or verify_value(key, value), f"a torn value of {key!r}"
        n += 1
    conn.send(n)


def opener(name: str, conn: Connection) -> None:
    """Child: open the damaged cache (which resets it) and say what it sees."""
    cache = Cache(name)
    conn.send((cache.stats()["generation"], cache.get(KEYS[0])))


@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_header_is_reset_by_the_next_opener_and_the_attached_go_on(ctx_name: str, damage: str) -> None:
    ctx = multiprocessing.get_context(ctx_name)
    name = f"reset-{ctx_name}-{random.getrandbits(32):x}"
    cache = Cache(name, "16MiB")
    try:
        for key in KEYS:
            cache.set(key, ["old", key])
        assert cache.stats()["generation"] == 0
        reader_end, reader_conn = ctx.Pipe()
        reader = start(ctx, attached_reader, name, reader_conn)
        assert receive(reader_end) == "read"
        busy_end, busy_conn = ctx.Pipe()
        busy = start(ctx, busy_writer, name, busy_conn, 7)
        assert receive(busy_end) == "started"

        at, garbage = DAMAGE[damage]
        with memoryview(cache.segment) as whole:
            start_at = cache_offset(cache) + at
            whole[start_at : start_at + len(garbage)] = garbage
        with pytest.raises(errors.CorruptSegment, match="header is damaged"):
            cache.check()

        open_end, open_conn = ctx.Pipe()
        join_all([start(ctx, opener, name, open_conn)])
        assert receive(open_end) == (1, None), "the opener did not reset the cache"
        # the parent was attached all along: same answer, and a sound table
        assert cache.stats()["generation"] == 1
        assert cache.get(KEYS[0]) is None
        cache.check()

        reader_end.send("go")
        assert receive(reader_end) == 1
        busy_end.send("stop")
        assert receive(busy_end) > 0
        join_all([reader, busy])
        assert all(cache.get(key) == ["new", key] for key in KEYS)
        cache.check()
    finally:
        cache.close()
        herdcache.remove(name)
