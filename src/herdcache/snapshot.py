"""Snapshots: read many keys of a :class:`~herdcache.Cache` as of one moment.

A snapshot is one point in the cache's commit sequence (its ``csn``):
it sees every write committed at or before that point and none after,
however long it stays open, and an atomic ``set_many``/``delete_many`` is
one commit, so a snapshot sees all of it or none of it::

    with cache.snapshot() as snap:
        a, b = snap.get("cfg:a"), snap.get("cfg:b")

Taking one is O(1) and takes no lock: it reads the commit counter and
registers the snapshot's horizon in this process's slot, so that writers
keep the versions it may still read.  Expiry is judged when you read: a
key whose ttl ran out since the snapshot began reads as absent.

A snapshot older than the cache's ``max_snapshot_age``, or one whose old
versions had to be freed (they may use a quarter of the cache's memory;
eviction may also take them), raises :class:`~herdcache.errors.SnapshotTooOld`
on its next read instead of answering wrongly.  A process that dies
inside a snapshot stops pinning memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, ValueTooLarge

if TYPE_CHECKING:
    from .cache import Cache, Key

_MISSING = object()


def present_values(get: Callable[[Any, Any], Any], keys: Iterable[Key]) -> dict[Key, Any]:
    """{key: get(key)} for the ``keys`` that ``get`` finds (get_many's body)."""
    found: dict[Key, Any] = {}
    for key in keys:
        value = get(key, _MISSING)
        if value is not _MISSING:
            found[key] = value
    return found


class Snapshot:
    """The cache as of one commit: ``get``, ``get_many``, ``[]``, ``in``.

    Use it as a context manager (``with cache.snapshot() as snap``); it
    holds its horizon from ``__enter__`` to ``__exit__``.
    """

    __slots__ = ("_cache", "_csn", "_deadline")

    def __init__(self, cache: Cache) -> None:
        """A snapshot of ``cache``, taken when the ``with`` block starts."""
        self._cache = cache
        self._csn: int | None = None
        self._deadline = 0

    def __enter__(self) -> Snapshot:
        if self._csn is not None:
            raise InvalidArgument("this snapshot is already open: take a new one with cache.snapshot()")
        self._csn, self._deadline = self._cache._snapshot_open(self._cache._max_snapshot_age_ns)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._csn is not None:
            self._cache._snapshot_close(self._csn)
            self._csn = None

    @property
    def csn(self) -> int:
        """The commit sequence number this snapshot reads at."""
        if self._csn is None:
            raise InvalidArgument("the snapshot is not open: use it as `with cache.snapshot() as snap:`")
        return self._csn

    def get(self, key: Key, default: Any = None) -> Any:
        """The value ``key`` had at the snapshot, or ``default`` if it was
        absent then (or has expired since).

        :raises SnapshotTooOld: the snapshot can no longer be read exactly.
        """
        csn = self._csn
        if csn is None:
            csn = self.csn  # raises the message saying how to open it
        try:
            return self._cache._get_value_at(key, default, csn, self._deadline)
        except ValueTooLarge:
            return self._get_long(key, default, csn)

    def _get_long(self, key: Key, default: Any, csn: int) -> Any:
        """get() of a key over the table's limit (see herdcache.longkeys)."""
        cache = self._cache
        where, raw = cache._where(key)
        if raw is None:
            raise  # noqa: PLE0704 - the empty key's ValueTooLarge, unchanged
        found = cache._get_at(where, csn, self._deadline)
        sealed = None if found is None else cache._unseal(raw, *found)
        return default if sealed is None else cache._decode(key, *sealed)

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The values of those ``keys`` present at the snapshot, as a dict."""
        return present_values(self.get, keys)

    def __getitem__(self, key: Key) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = "closed" if self._csn is None else f"csn={self._csn}"
        return f"<herdcache.Snapshot of {self._cache.name!r} {state}>"
