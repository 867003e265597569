"""Keys longer than the table's limit, stored under a digest.

The table keeps keys of 1 to :data:`KEY_MAX` bytes (250, memcached's
limit) inside its items.  Frameworks build longer ones (Django's
``KEY_FUNCTION`` over a long URL, Flask-Caching's ``cached`` over a query
string), and Django's contract for backends other than memcached is a
warning and a call that works.  So a longer key is stored under
``PREFIX + blake2b(key)``, and the item's bytes start with the full key:

- a read compares it, so two long keys whose digests collided never read
  each other's value (they would overwrite each other, at worst);
- :meth:`Cache.keys` lists the full key, not the digest.

Such an item is tagged with its serializer's tag plus :data:`LONG_FORMAT`,
so a reader that asks for the digest key itself is refused, never handed
an envelope as if it were a value.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from ._core import KEY_MAX

#: Opens the stored key of every long key; not valid UTF-8, so no str key
#: (only a bytes key spelled on purpose) can be mistaken for one.
PREFIX = b"\xffherdcache:long-key:"

#: Added to the serializer's tag of an item that holds a long key's value.
LONG_FORMAT = 0x40

_LENGTH = struct.Struct("<I")

# A str of this many characters or fewer is at most 4 * 62 = 248 bytes in
# UTF-8: short, without encoding it.
_SURELY_SHORT_CHARS = KEY_MAX // 4


def long_key(key: Any) -> bytes | None:
    """The UTF-8 bytes of ``key`` if it is a str or bytes key over
    :data:`KEY_MAX` bytes; None for any other key (the table judges it)."""
    if isinstance(key, str):
        if len(key) <= _SURELY_SHORT_CHARS:
            return None
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            return None  # lone surrogates: the table raises the usual error
    elif isinstance(key, bytes):
        raw = key
    else:
        return None
    return raw if len(raw) > KEY_MAX else None


def table_key(raw: bytes) -> bytes:
    """The key the table stores for the long key ``raw``."""
    return PREFIX + hashlib.blake2b(raw, digest_size=24).digest()


def wrap(raw: bytes, data: bytes) -> bytes:
    """The bytes stored for a long key: its length, itself, then the value."""
    return _LENGTH.pack(len(raw)) + raw + data


def unwrap(raw: bytes, stored: bytes) -> bytes | None:
    """The value bytes in ``stored`` if it holds the long key ``raw``;
    None if it holds another key (a digest collision) or is malformed."""
    end = _LENGTH.size + len(raw)
    if len(stored) < end or _LENGTH.unpack_from(stored)[0] != len(raw):
        return None
    if stored[_LENGTH.size : end] != raw:
        return None
    return stored[end:]


def stored_key(stored: bytes) -> bytes | None:
    """The full key at the start of ``stored``; None if the bytes are too
    short for the length they claim (never read past them)."""
    if len(stored) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(stored)
    if length > len(stored) - _LENGTH.size:
        return None
    return stored[_LENGTH.size : _LENGTH.size + length]
