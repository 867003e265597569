"""The per-process decoded layer across real processes: a write in one
process is seen by the very next read in another, whose layer held the old
value; a writer SIGKILLed at a random moment leaves no stale local hit.
One-process behaviour and the model test: tests/unit/test_local_layer.py.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.connection import Connection

import pytest
from cache_helpers import CacheRef, cache_ref, open_for
from helpers import HANG, join_all, kill, start

import herdcache
from herdcache import Cache

ROUNDS = 200
KEYS = [f"key:{i}" for i in range(8)]


def stepping_writer(ref: CacheRef, conn: Connection) -> None:
    """Child: change the key one way or another, say which round it was,
    wait for the reader's go-ahead; ROUNDS times."""
    cache = ref.open()
    for n in range(ROUNDS):
        action = n % 4
        if action == 0:
            cache.set("k", {"round": n})
        elif action == 1:
            cache.delete("k")
        elif action == 2:
            cache.set("k", {"round": n}, ttl=3600)
        else:
            cache.clear()
        conn.send(n)
        assert conn.poll(HANG), "the reader never answered"
        conn.recv()
    conn.close()


def expected_after(n: int) -> object:
    return {"round": n} if n % 4 in (0, 2) else None


@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_a_write_in_one_process_is_seen_by_the_next_read_in_another(ctx_name: str) -> None:
    ctx = multiprocessing.get_context(ctx_name)
    name = f"local-mp-{ctx_name}-{random.getrandbits(32):x}"
    cache = open_for(ctx, name, local_items=100)
    try:
        parent, child = ctx.Pipe()
        writer = start(ctx, stepping_writer, cache_ref(cache, ctx), child)
        hits_before = cache.stats()["local"]["hits"]
        for n in range(ROUNDS):
            assert parent.poll(HANG), f"the writer never finished round {n}"
            assert parent.recv() == n
            got = cache.get("k")
            assert got == expected_after(n), f"round {n}: read {got!r}, the writer had just made it {expected_after(n)!r}"
            assert cache.get("k") == got  # the second read is a local hit when present
            parent.send("go")
        join_all([writer])
        # the layer was in use: present values were served from it
        assert cache.stats()["local"]["hits"] - hits_before >= ROUNDS // 2
    finally:
        cache.close()
        if ctx_name != "fork":
            herdcache.remove(name)


def busy_writer(ref: CacheRef, started: Connection, seed: int) -> None:
    """Child: overwrite the keys with fresh values as fast as it can."""
    cache = ref.open()
    rng = random.Random(seed)
    started.send("started")
    n = 0
    while True:
        n += 1
        cache.set(rng.choice(KEYS), {"n": n, "pad": "x" * rng.randrange(1, 500)})


@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_a_killed_writer_leaves_no_stale_local_hit(ctx_name: str) -> None:
    """Kill a busy writer at random moments while this process reads through
    its layer; afterwards every layered read equals a plain read."""
    ctx = multiprocessing.get_context(ctx_name)
    name = f"local-kill-{ctx_name}-{random.getrandbits(32):x}"
    layered = open_for(ctx, name, size="4MiB", local_items=100)
    plain = Cache(segment=layered.segment)
    rng = random.Random(7)
    try:
        for round_ in range(20 if ctx_name == "fork" else 5):
            parent, child = ctx.Pipe()
            writer = start(ctx, busy_writer, cache_ref(layered, ctx, size="4MiB"), child, round_)
            assert parent.poll(HANG), "the writer never started"
            parent.recv()
            deadline = time.monotonic() + rng.uniform(0.001, 0.02)  # the kill moment
            while time.monotonic() < deadline:
                for key in KEYS:
                    layered.get(key)
            kill(writer)
            for key in KEYS:
                assert layered.get(key) == plain.get(key), f"round {round_}: {key} stale after the kill"
            layered.set(KEYS[0], "after")  # the stripe still works, and is seen
            assert layered.get(KEYS[0]) == "after" == plain.get(KEYS[0])
        layered.check()
    finally:
        layered.close()
        if ctx_name != "fork":
            herdcache.remove(name)
