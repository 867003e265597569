"""A damaged table never crashes the process that uses it (RELIABILITY
scenario 20, short form; design rule: every offset read from the segment
is untrusted).

A named cache is filled, then a fresh Python process damages its table in
place (random bytes, bit flips, whole runs of garbage or zeros, dense
damage to the header, statistics, stripes, buckets and maps at its front)
and uses it every way there is: get, lookup, set, add, delete, touch,
len, iteration, stats, check, reopening.  The contract is only this:
each call works or raises a HerdcacheError, the process is not killed by
a signal and does not hang, and clear() always gets back to a table that
passes check().  The damage is done in a child so that a crash is a
failed test, not a dead test run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cache_workers import CORRUPTIONS
from helpers import HANG

from herdcache import Cache

TESTS = str(Path(__file__).resolve().parent.parent)


def use_corrupted(name: str, mode: str, seed: int) -> dict[str, int]:
    """Run corrupt_and_use in a fresh interpreter; fail on a signal, a
    hang, or an exception that is not a HerdcacheError."""
    code = (
        f"import sys; sys.path.insert(0, {TESTS!r}); import cache_workers; "
        f"cache_workers.corrupt_and_use({name!r}, {mode!r}, {seed})"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=HANG, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"using the table damaged by {mode!r} (seed {seed}) hung") from exc
    if done.returncode < 0:
        raise AssertionError(
            f"using the table damaged by {mode!r} (seed {seed}) killed the process with "
            f"{signal.Signals(-done.returncode).name}:\n{done.stderr[-3000:]}"
        )
    assert done.returncode == 0, f"{mode!r} (seed {seed}) raised a non-herdcache error:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])["errors"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", CORRUPTIONS)
def test_a_damaged_table_raises_or_works_never_crashes(segment_name: str, mode: str, seed: int) -> None:
    """Whatever the damage, every operation works or raises a HerdcacheError,
    nothing crashes or hangs, and clear() restores a sound table."""
    with Cache(segment_name, "8MiB", serializer="raw") as cache:
        for i in range(3000):
            cache.set(b"key-%d" % i, b"v" * (i * 7 % 2000), ttl=None if i % 4 else 1000)
    use_corrupted(segment_name, mode, seed)
