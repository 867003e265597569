"""Timing and statistics helpers shared by the benchmarks.

All clocks are ``time.perf_counter_ns``, which on Linux is CLOCK_MONOTONIC:
one clock for every process of the machine, so timestamps taken in different
processes can be subtracted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

now_ns = time.perf_counter_ns


def ns_per_op(
    op: Callable[..., object],
    keys: Sequence[str],
    repeat: int,
    values: Sequence[object] | None = None,
    clock: Callable[[], int] = now_ns,
) -> float:
    """Median over ``repeat`` timed passes of ``op(key)`` (or ``op(key, value)``
    when ``values`` is given) for every key, in ns per call.

    One untimed pass runs first as a warm-up. A pass is timed as a whole and
    divided by the number of keys: timing each call alone would add the
    clock's own cost (tens of ns) to the fastest peers. ``clock`` may be
    ``time.thread_time_ns`` (CPU time: the time other processes take the
    core away is not counted, which steadies figures on a busy machine).
    """
    one_pass = _pass_with_values if values is not None else _pass
    one_pass(op, keys, values, clock)
    return statistics.median(one_pass(op, keys, values, clock) / len(keys) for _ in range(repeat))


def _pass(op, keys, _values, clock) -> int:
    start = clock()
    for key in keys:
        op(key)
    return clock() - start


def _pass_with_values(op, keys, values, clock) -> int:
    start = clock()
    for key, value in zip(keys, values):
        op(key, value)
    return clock() - start


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
