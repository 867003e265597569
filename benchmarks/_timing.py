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
) -> float:
    """Median over ``repeat`` timed passes of ``op(key)`` (or ``op(key, value)``
    when ``values`` is given) for every key, in ns per call.

    One untimed pass runs first as a warm-up. A pass is timed as a whole and
    divided by the number of keys: timing each call alone would add the
    clock's own cost (tens of ns) to the fastest peers.
    """
    one_pass = _pass_with_values if values is not None else _pass
    one_pass(op, keys, values)
    return statistics.median(one_pass(op, keys, values) / len(keys) for _ in range(repeat))


def _pass(op, keys, _values) -> int:
    start = now_ns()
    for key in keys:
        op(key)
    return now_ns() - start


def _pass_with_values(op, keys, values) -> int:
    start = now_ns()
    for key, value in zip(keys, values):
        op(key, value)
    return now_ns() - start


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
