"""The long forms of the cache's race and kill tests (``-m stress``).

- Torn reads (RELIABILITY scenario 18): four writers and four readers of
  self-checking values for ``HERDCACHE_STRESS_SECONDS`` (60) per cache
  size; zero bad reads.
- Kill loop (scenarios 2 and 4): ``HERDCACHE_STRESS_KILLS`` (1,000)
  writers SIGKILLed at random moments per cache size under two readers.

Also runnable without pytest, e.g. for an overnight soak::

    python tests/stress/test_cache_soak.py --seconds 600 --kills 10000
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cache_helpers import env_number
from cache_scenarios import kill_loop, race

from herdcache import Cache

SIZES = ["1MiB", "64MiB"]


def soak(size: str, seconds: float) -> None:
    """Four writers against four readers (half using lookup) for ``seconds``."""
    with Cache(size=size, serializer="raw") as cache:
        race(multiprocessing.get_context("fork"), cache, writers=4, readers=4, reads=0, seconds=seconds)


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", SIZES)
def test_readers_never_see_a_torn_value_soak(size: str) -> None:
    """Four writers, four readers, HERDCACHE_STRESS_SECONDS: zero bad reads."""
    soak(size, env_number("HERDCACHE_STRESS_SECONDS", 60))


@pytest.mark.stress
@pytest.mark.timeout(0)
@pytest.mark.parametrize("size", SIZES)
def test_a_thousand_killed_writers(size: str) -> None:
    """HERDCACHE_STRESS_KILLS (1,000) killed writers: no torn value, no hung
    reader, check() passes after each kill."""
    kill_loop(int(env_number("HERDCACHE_STRESS_KILLS", 1000)), size, seed=2)


def main() -> None:
    """Run both long forms with the given lengths, every size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="torn-read soak per cache size")
    parser.add_argument("--kills", type=int, default=1000, help="killed writers per cache size")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    for size in SIZES:
        soak(size, args.seconds)
        print(f"torn reads, {size}: {args.seconds:.0f} s, no bad read")
        kill_loop(args.kills, size, seed=args.seed)
        print(f"kill loop, {size}: {args.kills} kills, no bad read")


if __name__ == "__main__":
    main()
