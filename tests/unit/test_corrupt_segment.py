"""A corrupted or hostile segment file never crashes the interpreter.

Random bytes are written over the header and registry of a real segment;
attaching it and using it may then fail, but only with a HerdcacheError
(never a segfault, a hang, or some other exception such as a
UnicodeDecodeError from a garbled structure name).  Each kind of damage
that has an error of its own (a foreign magic, another layout version, a
truncated file, an inconsistent header, a registry entry outside the
segment) must raise exactly that one.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herdcache import Segment, errors

SIZE = 1024**2
#: Offsets inside hc_segment_header (segment.h) worth aiming numbers at:
#: version, header size, total size, data offset, slot and registry
#: counts, allocation top, the registry lock, registry entry 0.
FIELDS = [8, 12, 16, 24, 104, 108, 112, 192, 196, 256, 260, 264, 272]
#: The registry entries the template uses (112 bytes each, from byte 256).
ENTRIES = (256, 256 + 4 * 112)


@functools.lru_cache(maxsize=None)
def template() -> tuple[bytes, int]:
    """The bytes of a real segment holding a few structures, and its data offset."""
    segdir = tempfile.mkdtemp(prefix="hc-template-")
    try:
        with Segment.create("t", SIZE, dir=segdir) as seg:
            seg.counter("hits").add(3)
            seg.lock("lock")
            seg.condition("ready")
            seg.struct("blob", 1000)[0][:4] = b"abcd"
            with open(seg.path, "rb") as f:
                return f.read(), seg.info()["data_offset"]
    finally:
        shutil.rmtree(segdir)


def numbers() -> st.SearchStrategy[bytes]:
    """Little-endian integers a hostile header might hold."""
    interesting = st.sampled_from([0, 1, 63, 64, 4096, 98304, SIZE - 64, SIZE, SIZE + 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])
    value = st.one_of(interesting, st.integers(0, 2**64 - 1))
    return st.builds(lambda v, wide: struct.pack("<Q" if wide else "<I", v % (2**64 if wide else 2**32)), value, st.booleans())


def patches(data_offset: int) -> st.SearchStrategy[list[tuple[int, bytes]]]:
    """Where to write what: random bytes anywhere in the header after the
    magic or in the registry entries in use, or numbers at the header's
    fields.  (The magic is left alone here, so that examples get past the
    first check; see :func:`magic_damage`.)"""
    random_bytes = st.tuples(st.integers(8, data_offset - 1), st.binary(min_size=1, max_size=48))
    in_registry = st.tuples(st.integers(*ENTRIES), st.binary(min_size=1, max_size=32))
    at_field = st.tuples(st.sampled_from(FIELDS), numbers())
    return st.lists(st.one_of(random_bytes, in_registry, at_field), min_size=1, max_size=8)


def magic_damage() -> st.SearchStrategy[tuple[int, bytes] | None]:
    """Usually nothing; sometimes one patch over the magic itself."""
    over_magic = st.tuples(st.integers(0, 7), st.binary(min_size=1, max_size=8))
    return st.one_of(st.none(), st.none(), st.none(), over_magic)


_serial = itertools.count()


def use_everything(seg: Segment) -> None:
    """What a user might do with a segment they attached."""
    seg.names()
    seg.info()
    seg.structs()
    seg.counter("hits").add(1)
    view, _ = seg.struct("blob", 1000)
    bytes(view[:4])
    del view
    seg.struct("new", 100)
    lock = seg.lock("lock")
    if lock.acquire(timeout=1):
        lock.release()
    cond = seg.condition("ready")
    with cond:
        cond.notify_all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), truncate=st.one_of(st.none(), st.none(), st.none(), st.integers(0, SIZE)))
def test_garbled_header_raises_only_herdcache_errors(segdir: str, data, truncate) -> None:
    image, data_offset = template()
    image = bytearray(image)
    damage = data.draw(patches(data_offset)) + [data.draw(magic_damage())]
    for offset, chunk in filter(None, damage):
        image[offset : offset + len(chunk)] = chunk
    name = f"f{next(_serial)}"
    path = os.path.join(segdir, f"herdcache.{name}")
    with open(path, "wb") as f:
        f.write(image if truncate is None else image[:truncate])
    os.chmod(path, 0o600)
    try:
        seg = Segment.attach(name, dir=segdir)
    except errors.HerdcacheError:
        return
    try:
        use_everything(seg)
    except errors.HerdcacheError:
        pass
    finally:
        seg.close()
        os.unlink(path)


#: Header fields (offset, width) attach checks against the file and this
#: build: header size, total size, data offset, slot and registry counts.
GEOMETRY = [(12, 4), (16, 8), (24, 8), (104, 4), (108, 4)]
#: (offset of re_offset, offset of re_size) of registry entry i.
REGISTRY_OFFSET, REGISTRY_SIZE = 8, 16


def attach_image(segdir: str, image: bytes) -> Segment:
    """Write ``image`` as a segment file of its own and attach it."""
    name = f"k{next(_serial)}"
    path = os.path.join(segdir, f"herdcache.{name}")
    with open(path, "wb") as f:
        f.write(image)
    os.chmod(path, 0o600)
    return Segment.attach(name, dir=segdir)


def changed(image: bytes, offset: int, chunk: bytes) -> bytes:
    """``image`` with ``chunk`` written at ``offset``."""
    return image[:offset] + chunk + image[offset + len(chunk) :]


def damages() -> st.SearchStrategy[tuple[str, bytes, type]]:
    """(what, damaged image, the error attach must raise) for one kind of damage."""
    image, _ = template()
    magic = st.builds(lambda b: ("magic", changed(image, 0, b), errors.NotASegment), st.binary(min_size=8, max_size=8).filter(any))
    zero_magic = st.just(("zero magic (the creator died before publishing)", bytes(8) + image[8:], errors.SegmentNotFound))
    version = st.builds(
        lambda v: ("version", changed(image, 8, struct.pack("<I", v)), errors.LayoutMismatch), st.integers(0, 2**32 - 1)
    )
    # Shorter than the magic reads as a creator's file before its magic: removed.
    truncated = st.builds(
        lambda n: ("truncated", image[:n], errors.CorruptSegment if n >= 8 else errors.SegmentNotFound),
        st.integers(0, SIZE - 1),
    )
    geometry = st.builds(
        lambda field, v: ("geometry", changed(image, field[0], v.to_bytes(8, "little")[: field[1]]), errors.CorruptSegment),
        st.sampled_from(GEOMETRY),
        st.integers(0, 2**64 - 1),
    )
    return st.one_of(magic, zero_magic, version, truncated, geometry).filter(lambda damage: damage[1] != image)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=damages())
def test_each_kind_of_damage_raises_its_own_error(segdir: str, damage: tuple[str, bytes, type]) -> None:
    what, image, expected = damage
    with pytest.raises(expected):
        attach_image(segdir, image).close()


@pytest.mark.parametrize(
    "offset, size",
    [(SIZE, 8), (SIZE + 4096, 8), (2**64 - 64, 128), (SIZE - 64, 1000), (SIZE - 64, 2**64 - 32)],
    ids=["at-end", "past-end", "wraps", "runs-past-end", "size-wraps"],
)
def test_registry_entry_outside_the_segment_is_corrupt(segdir: str, offset: int, size: int) -> None:
    """An entry whose block lies, or ends, outside the segment: CorruptSegment,
    never a view or pointer past the mapping."""
    image, _ = template()
    blob = image.index(b"blob\0") - 24  # the entry's re_state
    image = changed(image, blob + REGISTRY_OFFSET, struct.pack("<QQ", offset, size))
    with attach_image(segdir, image) as seg:
        for call in (seg.names, seg.structs, lambda: seg.struct("blob", 1000), lambda: seg.counter("other")):
            with pytest.raises(errors.CorruptSegment, match="registry entry") as info:
                call()
            assert str(offset) in str(info.value)


def test_structure_name_that_is_not_utf8_is_corrupt_segment(segdir: str) -> None:
    """Regression: a garbled name raised UnicodeDecodeError from names() and info()."""
    image, _ = template()
    name_of_first_entry = ENTRIES[0] + 24  # re_state, re_kind, re_offset, re_size
    assert image[name_of_first_entry : name_of_first_entry + 5] == b"hits\0"
    path = os.path.join(segdir, "herdcache.bad")
    with open(path, "wb") as f:
        f.write(image[:name_of_first_entry] + b"\x80" + image[name_of_first_entry + 1 :])
    os.chmod(path, 0o600)
    with Segment.attach("bad", dir=segdir) as seg:
        for call in (seg.names, seg.structs, seg.info):
            with pytest.raises(errors.CorruptSegment, match="not UTF-8"):
                call()
        assert seg.counter("other").add(1) == 1  # the rest of the segment still works
