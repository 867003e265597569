"""How values become bytes in shared memory, and back.

A serializer is any object with ``dumps(obj) -> bytes`` and
``loads(data) -> obj``.  herdcache ships three, chosen by name:

``"msgpack"`` (the default)
    The ``msgpack`` package, extended so that what goes in comes out:
    tuples stay tuples (not lists), bytes and str stay distinct, and
    ``datetime``/``date``/``time``/``timedelta``, ``set``/``frozenset``,
    ``Decimal`` and ``UUID`` round-trip.  Decoding is bounded by the size of
    the stored bytes, so a hostile length prefix raises instead of
    allocating gigabytes.  Safe with data other processes wrote.
``"pickle"``
    Any picklable object.  Unpickling runs code chosen by whoever wrote the
    bytes: use it only when every process that can write the segment is
    trusted (the same user, your own code).
``"raw"``
    ``bytes`` in, ``bytes`` out; anything else is refused.

Each stored value carries its serializer's tag, so a value written by one
serializer is never decoded by another: reading it raises
:class:`~herdcache.errors.SerializationError`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import pickle
import uuid
from typing import Any, Callable, Protocol, runtime_checkable

import msgpack

from .errors import SerializationError, UnpicklableValue

TAG_MSGPACK = 1
TAG_PICKLE = 2
TAG_RAW = 3
TAG_CUSTOM = 4


@runtime_checkable
class SerializerLike(Protocol):
    """What a custom serializer must provide."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# msgpack extension type codes (0..127 are the application's).
_EXT_TUPLE = 1
_EXT_DATETIME = 2
_EXT_DATE = 3
_EXT_TIME = 4
_EXT_TIMEDELTA = 5
_EXT_SET = 6
_EXT_FROZENSET = 7
_EXT_DECIMAL = 8
_EXT_UUID = 9


class MsgpackSerializer:
    """msgpack, keeping Python's types apart (see the module docstring)."""

    tag = TAG_MSGPACK
    name = "msgpack"

    def __init__(self) -> None:
        """Build the packer options once."""
        self._pack_options = {"use_bin_type": True, "strict_types": True, "default": self._default}

    def _pack(self, obj: Any) -> bytes:
        packed: bytes = msgpack.packb(obj, **self._pack_options)
        return packed

    def _default(self, obj: Any) -> Any:
        encoders: dict[type, Callable[[Any], tuple[int, bytes]]] = {
            tuple: lambda o: (_EXT_TUPLE, self._pack(list(o))),
            set: lambda o: (_EXT_SET, self._pack(list(o))),
            frozenset: lambda o: (_EXT_FROZENSET, self._pack(list(o))),
            _dt.datetime: lambda o: (_EXT_DATETIME, o.isoformat().encode()),
            _dt.date: lambda o: (_EXT_DATE, o.isoformat().encode()),
            _dt.time: lambda o: (_EXT_TIME, o.isoformat().encode()),
            _dt.timedelta: lambda o: (_EXT_TIMEDELTA, self._pack([o.days, o.seconds, o.microseconds])),
            decimal.Decimal: lambda o: (_EXT_DECIMAL, str(o).encode()),
            uuid.UUID: lambda o: (_EXT_UUID, o.bytes),
        }
        encoder = encoders.get(type(obj))
        if encoder is not None:
            return msgpack.ExtType(*encoder(obj))
        # strict_types sends subclasses here (IntEnum, namedtuple, OrderedDict):
        # store them as their base type.
        if isinstance(obj, tuple):
            return self._default(tuple(obj))
        bases: tuple[type[Any], ...] = (int, float, str, bytes, dict, list)
        for base in bases:
            if isinstance(obj, base):
                return base(obj)
        raise TypeError(f"cannot serialize {type(obj).__name__!r} with msgpack")

    def _ext_hook(self, code: int, data: bytes) -> Any:
        decoders: dict[int, Callable[[bytes], Any]] = {
            _EXT_TUPLE: lambda d: tuple(self.loads(d)),
            _EXT_SET: lambda d: set(self.loads(d)),
            _EXT_FROZENSET: lambda d: frozenset(self.loads(d)),
            _EXT_DATETIME: lambda d: _dt.datetime.fromisoformat(d.decode()),
            _EXT_DATE: lambda d: _dt.date.fromisoformat(d.decode()),
            _EXT_TIME: lambda d: _dt.time.fromisoformat(d.decode()),
            _EXT_TIMEDELTA: lambda d: _dt.timedelta(*self.loads(d)),
            _EXT_DECIMAL: lambda d: decimal.Decimal(d.decode()),
            _EXT_UUID: lambda d: uuid.UUID(bytes=d),
        }
        decoder = decoders.get(code)
        if decoder is None:
            return msgpack.ExtType(code, data)
        return decoder(data)

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; raise SerializationError if msgpack cannot."""
        try:
            return self._pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"msgpack cannot store this value: {exc}. Store plain data (dict, list, "
                "str, bytes, numbers, datetimes...), or open the cache with "
                "serializer='pickle' if every writer is trusted"
            ) from exc

    def decoder(self) -> tuple[Any, dict[str, Any]]:
        """(function, keyword arguments) that decode like :meth:`loads`,
        for callers that can call them without a Python frame in between."""
        return msgpack.unpackb, {"strict_map_key": False, "ext_hook": self._ext_hook}

    def loads(self, data: bytes) -> Any:
        """Decode bytes that this serializer wrote.

        msgpack's unpackb bounds every length (string, binary, array, map,
        ext) by the size of ``data`` itself, so a forged 4 GiB length prefix
        raises at once instead of allocating.  Damaged extension bytes make
        the type constructors raise what they raise (decimal.InvalidOperation,
        OverflowError, ...): every such failure is a SerializationError.
        """
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext_hook)
        except Exception as exc:
            raise SerializationError(f"stored msgpack bytes are invalid: {exc}") from exc


class PickleSerializer:
    """pickle: any object, trusted writers only (see the module docstring)."""

    tag = TAG_PICKLE
    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj`` with the highest protocol."""
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PickleError, TypeError, AttributeError) as exc:
            raise UnpicklableValue(f"pickle cannot store this value: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle: runs code chosen by the writer."""
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"stored pickle bytes are invalid: {exc}") from exc


class RawSerializer:
    """bytes only, stored as they are."""

    tag = TAG_RAW
    name = "raw"

    def dumps(self, obj: Any) -> bytes:
        """Return ``obj`` if it is bytes-like; refuse anything else."""
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        raise SerializationError(
            f"serializer='raw' stores bytes, not {type(obj).__name__}: encode it first, "
            "or use serializer='msgpack'"
        )

    def loads(self, data: bytes) -> bytes:
        """Return the stored bytes."""
        return data


class CustomSerializer:
    """Adapter for a user object with ``dumps``/``loads``."""

    tag = TAG_CUSTOM

    def __init__(self, inner: SerializerLike):
        """Wrap ``inner``."""
        self.inner = inner
        self.name = str(getattr(inner, "name", type(inner).__name__))

    def dumps(self, obj: Any) -> bytes:
        """``inner.dumps(obj)``, checked to be bytes."""
        try:
            data = self.inner.dumps(obj)
        except Exception as exc:
            raise SerializationError(f"{self.name}.dumps failed: {exc}") from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"{self.name}.dumps returned {type(data).__name__}, not bytes")
        return bytes(data)

    def loads(self, data: bytes) -> Any:
        """``inner.loads(data)``; any failure is a SerializationError."""
        try:
            return self.inner.loads(data)
        except Exception as exc:
            raise SerializationError(f"{self.name}.loads failed: {exc}") from exc


_BY_NAME = {"msgpack": MsgpackSerializer, "pickle": PickleSerializer, "raw": RawSerializer}


def get_serializer(spec: str | SerializerLike | None = None) -> Any:
    """The serializer named by ``spec``: ``"msgpack"`` (also None),
    ``"pickle"``, ``"raw"``, or any object with ``dumps`` and ``loads``.

    >>> s = get_serializer()
    >>> s.loads(s.dumps({"t": (1, 2), "b": b"x"}))
    {'t': (1, 2), 'b': b'x'}
    """
    if spec is None:
        spec = "msgpack"
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec]()
        except KeyError:
            raise ValueError(f"unknown serializer {spec!r}: use 'msgpack', 'pickle', 'raw' or an object with dumps/loads") from None
    if isinstance(spec, (MsgpackSerializer, PickleSerializer, RawSerializer, CustomSerializer)):
        return spec
    if isinstance(spec, SerializerLike):
        return CustomSerializer(spec)
    raise TypeError(f"a serializer is a name or an object with dumps() and loads(), not {type(spec).__name__}")
