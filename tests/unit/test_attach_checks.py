"""Attach checks every header field and the file itself, and says how to fix each failure.

Offsets are those of ``hc_segment_header`` in segment.h: the magic is the
uint64 at byte 0, the layout version the uint32 at byte 8.
"""

from __future__ import annotations

import os
import subprocess
import sys
import struct

import pytest

from herdcache import Segment, errors

MAGIC = 0x4843484552444331
VERSION_OFFSET = 8


def real_segment(segdir: str, name: str = "s") -> str:
    """Create a real segment with one structure, close it, return its path."""
    with Segment.create(name, "1MiB", dir=segdir) as seg:
        seg.counter("c").add(1)
        return seg.path


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def plant(segdir: str, name: str, content: bytes) -> str:
    """A file at the segment's name that herdcache did not make."""
    path = os.path.join(segdir, f"herdcache.{name}")
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, 0o600)
    return path


def test_a_good_segment_attaches_and_keeps_its_data(segdir: str) -> None:
    real_segment(segdir)
    with Segment.attach("s", dir=segdir) as seg:
        assert seg.counter("c").load() == 1
        assert seg.names() == ["c"]


def test_garbage_file_is_not_a_segment(segdir: str) -> None:
    garbage = bytes(range(256)) * 800
    path = plant(segdir, "g", garbage)
    with pytest.raises(errors.NotASegment, match="remove the file") as info:
        Segment.attach("g", dir=segdir)
    assert path in str(info.value)
    with open(path, "rb") as f:
        assert f.read() == garbage, "attach changed a file it refused"


def test_segment_of_the_other_byte_order_is_not_a_segment(segdir: str) -> None:
    path = real_segment(segdir)
    patch(path, 0, struct.pack(">Q", MAGIC))
    with pytest.raises(errors.NotASegment, match="byte order"):
        Segment.attach("s", dir=segdir)


def test_other_layout_version_is_layout_mismatch(segdir: str) -> None:
    path = real_segment(segdir)
    patch(path, VERSION_OFFSET, struct.pack("<I", 99))
    with pytest.raises(errors.LayoutMismatch, match="version 99") as info:
        Segment.attach("s", dir=segdir)
    assert "herdcache rm" in str(info.value)


@pytest.mark.parametrize("keep", [512 * 1024, 50_000], ids=["shorter-than-header-says", "shorter-than-a-header"])
def test_truncated_file_is_corrupt(segdir: str, keep: int) -> None:
    path = real_segment(segdir)
    os.truncate(path, keep)
    with pytest.raises(errors.CorruptSegment, match="truncated") as info:
        Segment.attach("s", dir=segdir)
    assert "herdcache rm" in str(info.value)


@pytest.mark.parametrize("size", [0, 4, 200_000], ids=["empty", "tiny", "zeros"])
def test_half_created_segment_whose_creator_is_gone_is_removed_and_made_again(segdir: str, size: int) -> None:
    """A file with no header that nobody holds the creation lock on was left by a
    creator that died before publishing: attach removes it (the name is free),
    and open creates the segment anew, at once."""
    path = plant(segdir, "half", bytes(size))
    with pytest.raises(errors.SegmentNotFound):
        Segment.attach("half", dir=segdir)
    assert not os.path.exists(path)
    plant(segdir, "half", bytes(size))
    with Segment.open("half", "1MiB", dir=segdir) as seg:
        assert seg.created
        seg.counter("c").add(1)
    with Segment.attach("half", dir=segdir) as seg:
        assert int(seg.counter("c")) == 1


def test_a_segment_without_header_that_processes_use_is_corrupt(segdir: str) -> None:
    """A zeroed magic under live users is damage, not a dead creation: it is not removed."""
    path = real_segment(segdir)
    code = (
        "import herdcache, sys\n"
        "try:\n"
        f"    herdcache.Segment.attach('s', dir={segdir!r})\n"
        "except herdcache.errors.CorruptSegment as exc:\n"
        "    print(exc)\n"
    )
    with Segment.attach("s", dir=segdir) as user:
        user.counter("c").add(1)  # this process holds a slot
        patch(path, 0, bytes(8))
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
        assert "processes use it" in other.stdout, (other.stdout, other.stderr)
        assert os.path.exists(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_segment_of_another_user_is_unsafe(segdir: str) -> None:
    path = real_segment(segdir)
    os.chown(path, 65534, 65534)
    with pytest.raises(errors.UnsafeSegment, match="uid 65534") as info:
        Segment.attach("s", dir=segdir)
    assert "Run as the user who created it" in str(info.value)
    with pytest.raises(errors.UnsafeSegment):
        Segment.attach("s", dir=segdir, allow_shared=True)  # only about the mode


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_segment_others_may_write_needs_allow_shared(segdir: str, mode: int) -> None:
    path = real_segment(segdir)
    os.chmod(path, mode)
    with pytest.raises(errors.UnsafeSegment, match=f"{mode:04o}") as info:
        Segment.attach("s", dir=segdir)
    assert "allow_shared=True" in str(info.value) and "chmod 600" in str(info.value)
    assert isinstance(info.value, PermissionError)
    with Segment.attach("s", dir=segdir, allow_shared=True) as seg:
        assert seg.counter("c").load() == 1


def test_readable_by_others_is_not_writable_by_others(segdir: str) -> None:
    path = real_segment(segdir)
    os.chmod(path, 0o644)
    with Segment.attach("s", dir=segdir) as seg:
        assert seg.counter("c").load() == 1


def test_symlink_at_the_name_is_refused(segdir: str) -> None:
    path = real_segment(segdir, "real")
    os.symlink(path, os.path.join(segdir, "herdcache.link"))
    with pytest.raises(errors.UnsafeSegment, match="symbolic link") as info:
        Segment.attach("link", dir=segdir)
    assert "Remove the link" in str(info.value)
    with pytest.raises(errors.UnsafeSegment):
        Segment.attach("link", dir=segdir, allow_shared=True)


def test_directory_at_the_name_is_an_error_not_a_crash(segdir: str) -> None:
    os.mkdir(os.path.join(segdir, "herdcache.d"))
    with pytest.raises(errors.HerdcacheError):
        Segment.attach("d", dir=segdir)


def test_missing_segment_is_not_found(segdir: str) -> None:
    with pytest.raises(errors.SegmentNotFound, match="Segment.create"):
        Segment.attach("nothing", dir=segdir)
