"""Helpers of the cache tests: the configurations the contract runs under,
self-checking values, waiting on observable state, and handing a cache to
child processes.

Processes are synchronised with Events, Barriers, pipes and Queues, never
with sleeps.  :func:`helpers.wait_until` polls an observable state (a key
has expired, a counter moved) with a deadline that is a hang bound, not a
latency assertion: healthy runs finish far inside it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any



from herdcache import Cache


def env_number(name: str, default: float) -> float:
    """A duration or count from the environment (stress runs set them)."""
    value = os.environ.get(name)
    return float(value) if value else default


def same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types all the way down (so a tuple is
    not a list, 1 is not True, a naive datetime is not an aware one)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(any(same(k, k2) and same(v, b[k2]) for k2 in b) for k, v in a.items())
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.tzinfo == b.tzinfo
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return a == b


# -- configurations --------------------------------------------------------------


class JsonSerializer:
    """A user serializer (an object with dumps/loads): JSON text as UTF-8."""

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def _rich_value(i: int) -> Any:
    return {"i": i, "name": f"value-{i}", "tuple": (i, "x"), "blob": b"\x00\xff" * (i % 7), "f": i / 4}


def _json_value(i: int) -> Any:
    return {"i": i, "name": f"value-{i}", "list": [i, "x"], "f": i / 4}


def _raw_value(i: int) -> bytes:
    return b"value-%d-" % i + bytes(range(i % 256))


@dataclass(frozen=True)
class Config:
    """One way of opening a cache the contract must hold for."""

    serializer_name: str
    named: bool
    value: Callable[[int], Any] = field(repr=False)
    integers: bool = True  # does the serializer store ints (incr/decr)?

    @property
    def id(self) -> str:
        return f"{'named' if self.named else 'anon'}-{self.serializer_name}"

    def serializer(self) -> Any:
        return JsonSerializer() if self.serializer_name == "custom" else self.serializer_name


_SERIALIZERS = (
    ("msgpack", _rich_value, True),
    ("pickle", _rich_value, True),
    ("raw", _raw_value, False),
    ("custom", _json_value, True),
)

#: Every configuration: anonymous and named, times every serializer.
CONFIGS = [Config(s, named, value, ints) for named in (False, True) for s, value, ints in _SERIALIZERS]


# -- self-checking values ------------------------------------------------------------

_DIGEST = 16


def checked_value(key: bytes, seq: int, size: int, rng: random.Random) -> bytes:
    """``size`` bytes (at least 24) that prove themselves whole: an 8-byte
    sequence number, filler, and a keyed digest of key, sequence and filler.
    A torn, mixed or misplaced value fails :func:`verify_value`."""
    size = max(size, 8 + _DIGEST)
    head = struct.pack("<Q", seq)
    filler = rng.randbytes(min(size - 8 - _DIGEST, 64))
    filler = (filler * ((size - 8 - _DIGEST) // max(len(filler), 1) + 1))[: size - 8 - _DIGEST]
    digest = hashlib.blake2b(head + filler, digest_size=_DIGEST, key=key[:64]).digest()
    return head + filler + digest


def verify_value(key: bytes, value: bytes) -> bool:
    """True if ``value`` is exactly one that :func:`checked_value` made for ``key``."""
    if len(value) < 8 + _DIGEST:
        return False
    body, digest = value[:-_DIGEST], value[-_DIGEST:]
    return hashlib.blake2b(body, digest_size=_DIGEST, key=key[:64]).digest() == digest


# -- caches in child processes ---------------------------------------------------------


@dataclass(frozen=True)
class CacheRef:
    """How a child process reaches a cache: by inheritance under fork (the
    Cache itself), by name otherwise, with the options to open it with."""

    cache: Cache | None
    name: str | None
    options: dict[str, Any]

    def open(self) -> Cache:
        """The cache behind this reference, attached by name if it came by name."""
        if self.cache is not None:
            return self.cache
        assert self.name is not None
        return Cache(self.name, **self.options)


def cache_ref(cache: Cache, ctx: BaseContext, **options: Any) -> CacheRef:
    """A reference to ``cache`` that children of ``ctx`` can open."""
    if ctx.get_start_method() == "fork":
        return CacheRef(cache, None, {})
    assert cache.name is not None, "spawned children reach a cache by name"
    return CacheRef(None, cache.name, options)


def open_for(ctx: BaseContext, name: str, size: str = "16MiB", **options: Any) -> Cache:
    """A cache children of ``ctx`` can reach: anonymous under fork (they
    inherit it), named ``name`` otherwise (they attach)."""
    if ctx.get_start_method() == "fork":
        return Cache(size=size, **options)
    return Cache(name, size=size, **options)
