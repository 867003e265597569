"""Serializers: how herdcache turns values into bytes and back.

This is the one place that knows the formats; every structure that stores
objects (the queue, the cache) asks :func:`get_serializer` for one.

- ``"msgpack"`` (the default): the ``msgpack`` package, with
  ``use_bin_type=True`` so ``bytes`` and ``str`` stay apart.  Decoding
  derives every limit (``max_buffer_size`` and from it the string, binary,
  array, map and ext lengths) from the length of the message, so a
  hostile length prefix (a "4 GiB string" in 5 bytes) fails at once
  instead of allocating.  Map keys may be any msgpack type.  Tuples come
  back as lists.
- ``"raw"``: no serializing at all; values must be bytes-like and come
  back as ``bytes``.
- ``"pickle"``: any picklable object.  Opt-in only: unpickling runs code
  chosen by whoever wrote the bytes, so use it only between processes
  that trust each other (as ``multiprocessing`` does).
- any object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

__all__ = ["Serializer", "get_serializer"]

if msgpack.version < (1, 0):  # pragma: no cover - pyproject asks for >= 1.0
    raise ImportError("herdcache needs msgpack >= 1.0 (bytes and str kept apart by default)")


class Serializer(NamedTuple):
    """A named pair of functions; ``dumps is None`` means raw bytes."""

    name: str
    dumps: Callable[[Any], bytes] | None
    loads: Callable[[bytes], Any] | None
    spec: Any  # what get_serializer() was given, to rebuild it elsewhere


def _msgpack_loads(data: bytes, _unpackb: Callable[..., Any] = msgpack.unpackb) -> Any:
    # unpackb sets max_buffer_size=len(data), and every other limit
    # defaults to that, so a lying length prefix cannot allocate.
    return _unpackb(data, strict_map_key=False)


# Plain functions, not functools.partial: a partial with keywords costs
# more per call than msgpack's own work on a small message.  msgpack >= 1.0
# packs with use_bin_type=True by default.
_BUILTIN: dict[str, tuple[Any, Any]] = {
    "msgpack": (msgpack.packb, _msgpack_loads),
    "pickle": (pickle.dumps, pickle.loads),
    "raw": (None, None),
}


def get_serializer(spec: Any = "msgpack") -> Serializer:
    """Return the serializer ``spec`` names.

    :param spec: ``"msgpack"``, ``"raw"``, ``"pickle"``, an object with
        ``dumps`` and ``loads`` methods, or a :class:`Serializer`.
    :raises ValueError: for an unknown name.
    :raises TypeError: for an object without ``dumps`` and ``loads``.
    """
    if isinstance(spec, Serializer):
        return spec
    if isinstance(spec, str):
        try:
            dumps, loads = _BUILTIN[spec]
        except KeyError:
            raise ValueError(
                f"unknown serializer {spec!r}: use 'msgpack', 'raw', 'pickle', or an object with dumps() and loads()"
            ) from None
        return Serializer(spec, dumps, loads, spec)
    dumps, loads = getattr(spec, "dumps", None), getattr(spec, "loads", None)
    if not callable(dumps) or not callable(loads):
        raise TypeError(
            f"a serializer needs callable dumps(obj) -> bytes and loads(bytes) -> obj; {type(spec).__name__} has not both"
        )
    return Serializer(getattr(spec, "name", type(spec).__name__), dumps, loads, spec)
