"""Atomic 64-bit counters that live in a segment."""

from __future__ import annotations

from . import _core


class Counter(_core.Counter):
    """A signed 64-bit integer every attached process updates atomically.

    ``add(n)`` returns the new value (and wraps around at 2**63 like C's
    int64_t); ``load()``, ``store(v)``, ``exchange(v)`` and
    ``compare_exchange(expected, desired)`` are what C11's atomics offer.
    All are sequentially consistent, so a counter may also serve as a flag
    between processes.

    >>> import herdcache
    >>> seg = herdcache.Segment.anonymous("1MiB")
    >>> hits = seg.counter("hits")
    >>> hits.add(5), hits.add(-2), hits.compare_exchange(3, 10), hits.load()
    (5, 3, True, 10)
    >>> seg.close()
    """

    def __int__(self) -> int:
        return self.load()

    def __repr__(self) -> str:
        return f"<herdcache.Counter {self.load()}>"
