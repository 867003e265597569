"""One item whose value length is damaged in place (design rule: every
length read from the segment is untrusted; RELIABILITY scenario 20, aimed).

The random damage of test_cache_corrupt.py asks only for "no crash"; this
test plants one length that runs past the arena and asks for what a user
relies on: whichever operation meets the item first repairs the stripe
and answers as if the key were absent, and the other entries, their
listing and their count are those of the repaired table.  (A length that
stays inside the arena but runs past the item's block is caught under the
stripe lock by flight begin: tests/c/test_table.c.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from herdcache import Cache

HEADER = 48  # sizeof(hc_item), table.h
VALUE_LEN_AT = 28  # offsetof(hc_item, it_value_len)
KEY_LEN_AT = 44  # offsetof(hc_item, it_key_len)
VICTIM, VALUE = b"victim", b"A" * 100
NEIGHBOURS = {b"n-%d" % i: b"%d" % i * 60 for i in range(200)}


@pytest.fixture
def cache() -> Iterator[Cache]:
    """A cache holding the victim, then its neighbours (written after it,
    so that the blocks beyond the victim's hold their items)."""
    with Cache(None, "4MiB", serializer="raw") as made:
        made.set(VICTIM, VALUE)
        for key, value in NEIGHBOURS.items():
            made.set(key, value)
        yield made


def plant_value_len(cache: Cache, length: int) -> None:
    """Write length over the victim's it_value_len, found by its bytes."""
    with memoryview(cache.segment) as whole:
        at = bytes(whole).find(VICTIM + VALUE)
        assert at > HEADER, "the victim's item is not in the segment"
        header = at - HEADER
        assert whole[header + KEY_LEN_AT] == len(VICTIM), "not the victim's header"
        struct.pack_into("<I", whole, header + VALUE_LEN_AT, length)


FIRST_LOOKS = {
    "get": lambda cache: cache.get(VICTIM) is None,
    "get_or_compute": lambda cache: cache.get_or_compute(VICTIM, lambda: b"computed") == b"computed",
    "in": lambda cache: VICTIM not in cache,
    "touch": lambda cache: cache.touch(VICTIM) is False,
    "delete": lambda cache: cache.delete(VICTIM) is False,
    "list": lambda cache: {as_bytes(key) for key in cache} == set(NEIGHBOURS),
    "len": lambda cache: len(cache) == len(NEIGHBOURS),
}


def as_bytes(key: str | bytes) -> bytes:
    """A listed key as the bytes it was set with."""
    return key if isinstance(key, bytes) else key.encode()


@pytest.mark.parametrize("first", FIRST_LOOKS)
def test_an_item_whose_length_runs_past_the_arena_is_absent_to_whatever_looks_first(cache: Cache, first: str) -> None:
    """Whichever operation meets the damaged item first repairs the stripe
    and answers as if the key were absent (touch and delete report it
    absent, listing and counting leave it out, get_or_compute computes),
    and every other entry is still there, whole."""
    plant_value_len(cache, 0xFFFF_FF00)
    assert FIRST_LOOKS[first](cache), f"{first} met the damaged item as if it were whole"
    assert cache.get(VICTIM) in (None, b"computed"), "the damaged value came back"
    assert {key: cache.get(key) for key in NEIGHBOURS} == NEIGHBOURS
    assert {as_bytes(key) for key in cache} - {VICTIM} == set(NEIGHBOURS)
    cache.check()
