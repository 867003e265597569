"""The bodies of the snapshot tests' child processes (importable by
spawned children): bank writers that move money between accounts, and
readers that check the total through snapshots."""

from __future__ import annotations

import random
from multiprocessing.connection import Connection
from typing import Any

from cache_helpers import CacheRef

from herdcache.errors import SnapshotTooOld

ACCOUNTS = 64
START = 1000
TOTAL = ACCOUNTS * START


def account(i: int) -> str:
    """The key of account ``i``."""
    return f"acct:{i:02d}"


def open_bank(ref: CacheRef) -> None:
    """Give every account its starting balance (one atomic write)."""
    ref.open().set_many({account(i): START for i in range(ACCOUNTS)}, atomic=True)


def transfer_forever(ref: CacheRef, index: int, nwriters: int, atomic: bool, seed: int, conn: Connection) -> None:
    """Move random amounts among two or three of this writer's own
    accounts (index, index + nwriters, ...), forever: the sum over all
    accounts stays constant iff every transfer is written atomically.
    Owning its accounts, a writer needs no lock for read-modify-write."""
    cache = ref.open()
    rng = random.Random(seed)
    mine = [account(i) for i in range(index, ACCOUNTS, nwriters)]
    conn.send("started")
    while True:
        keys = rng.sample(mine, rng.choice((2, 3)))
        try:
            balances = cache.get_many(keys, consistent=True)
        except SnapshotTooOld:
            continue  # a stripe was rebuilt after a kill: read again
        amount = rng.randint(1, 50)
        balances[keys[0]] -= amount * (len(keys) - 1)
        for key in keys[1:]:
            balances[key] += amount
        cache.set_many(balances, atomic=atomic)


def check_sums(ref: CacheRef, stop: Any, rounds: int, stop_at_first_break: bool, conn: Connection) -> None:
    """Sum every account, alternating ``snapshot()`` and
    ``get_many(consistent=True)``, at least ``rounds`` times and until
    ``stop`` (an Event, or None) is set; report (exact sums, broken sums,
    too old)."""
    cache = ref.open()
    keys = [account(i) for i in range(ACCOUNTS)]
    exact = broken = too_old = r = 0
    while r < rounds or (stop is not None and not stop.is_set()):
        r += 1
        try:
            if r % 2:
                with cache.snapshot() as snap:
                    values = [snap[key] for key in keys]
            else:
                values = list(cache.get_many(keys, consistent=True).values())
        except SnapshotTooOld:
            too_old += 1
            continue
        if len(values) == ACCOUNTS and sum(values) == TOTAL:
            exact += 1
        else:
            broken += 1
            if stop_at_first_break:
                break
    conn.send((exact, broken, too_old))
