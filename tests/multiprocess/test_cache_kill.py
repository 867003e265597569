"""A writer SIGKILLed at a random moment, again and again, while readers
read (RELIABILITY scenarios 2 and 4, the issue's acceptance test).

Each round forks a writer that sets, replaces, adds and deletes
self-checking values on a few keys as fast as it can, so that it is
nearly always inside some stripe operation; once it says it has started,
the test waits a random fraction of a millisecond or three (the kill
moment, drawn at random; nothing waits on it) and SIGKILLs it.  Then:

- every key reads as some value a writer stored, or absent, never torn;
- ``check()`` passes: the operations after the kill repaired the stripe
  the writer died in (``stats()['recoveries']`` counts those repairs);
- both readers, which never stop, finish another pass: none is stuck
  behind the dead writer's lock;

and at the end no reader ever saw a bad value.  The default run kills
``HERDCACHE_KILLS`` (200) writers; tests/stress/test_cache_soak.py kills
1,000 per cache size (``HERDCACHE_STRESS_KILLS``).
"""

from __future__ import annotations

import pytest
from cache_helpers import env_number
from cache_scenarios import kill_loop

KILLS = int(env_number("HERDCACHE_KILLS", 200))


@pytest.mark.parametrize(("size", "kills"), [("16MiB", KILLS), ("1MiB", KILLS // 2)])
def test_a_killed_writer_never_tears_wedges_or_breaks_the_cache(size: str, kills: int) -> None:
    """Writers killed mid-operation (HERDCACHE_KILLS of them in a cache of
    several stripes, half as many in a tiny one that evicts all the time):
    no torn value, no hung reader, check() passes after each kill, and some
    kills needed repair."""
    kill_loop(kills, size, seed=1)
