"""Creating a named segment: exclusive, private, and reserved in full."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import tempfile
from typing import Iterator

import pytest

import herdcache
from herdcache import Segment, errors


@pytest.fixture
def small_tmpfs() -> Iterator[str]:
    """A 2 MiB tmpfs, standing in for Docker's small /dev/shm."""
    path = tempfile.mkdtemp(prefix="hc-small-")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "none", path], capture_output=True, text=True)
    if done.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    yield path
    subprocess.run(["umount", path], check=True)
    os.rmdir(path)


def test_segment_larger_than_the_filesystem_fails_at_create(small_tmpfs: str) -> None:
    """A full /dev/shm is SegmentFull at create, with the numbers, not SIGBUS later."""
    with pytest.raises(errors.SegmentFull) as info:
        Segment.create("big", "4MiB", dir=small_tmpfs)
    message = str(info.value)
    assert str(4 * 1024**2) in message and "free" in message
    assert isinstance(info.value, MemoryError)
    assert "Ask for a smaller size" in message and "larger size" not in message
    assert os.listdir(small_tmpfs) == [], "a failed create left its file behind"
    with Segment.create("fits", "1MiB", dir=small_tmpfs) as seg:
        seg.struct("all", seg.info()["free"])[0][-1] = 1  # every byte is backed
        with pytest.raises(errors.SegmentFull, match="Create the segment with a larger size"):
            seg.struct("more", 4096)
    with pytest.raises(errors.SegmentFull, match="Ask for a smaller size"):
        herdcache.Cache("cache", "4MiB", dir=small_tmpfs)


def test_segment_that_cannot_be_reserved_fails_at_create_without_root(segdir: str) -> None:
    """The same refusal for anyone: a file size limit (RLIMIT_FSIZE) stops
    the reservation as a full filesystem does, and needs no privilege."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024**2, hard))
    try:
        with pytest.raises(errors.SegmentFull) as info:
            Segment.create("big", "4MiB", dir=segdir)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(4 * 1024**2) in str(info.value)
    assert os.listdir(segdir) == [], "a failed create left its file behind"


def test_create_refuses_an_existing_segment(segdir: str) -> None:
    with Segment.create("s", "1MiB", dir=segdir) as seg:
        seg.counter("kept").add(7)
        with pytest.raises(errors.SegmentExists, match="Segment.attach"):
            Segment.create("s", "1MiB", dir=segdir)
        assert seg.counter("kept").load() == 7


def test_create_refuses_a_stale_file_and_leaves_it_alone(segdir: str) -> None:
    path = os.path.join(segdir, "herdcache.s")
    with open(path, "wb") as f:
        f.write(b"not mine")
    with pytest.raises(errors.SegmentExists) as info:
        Segment.create("s", "1MiB", dir=segdir)
    assert isinstance(info.value, FileExistsError)
    with open(path, "rb") as f:
        assert f.read() == b"not mine"


@pytest.mark.parametrize("target_exists", [True, False], ids=["link", "dangling-link"])
def test_create_never_follows_a_symlink(segdir: str, tmp_path, target_exists: bool) -> None:
    """A link planted at the name is refused; its target is neither created nor changed."""
    target = tmp_path / "victim"
    if target_exists:
        target.write_bytes(b"precious")
    os.symlink(target, os.path.join(segdir, "herdcache.s"))
    with pytest.raises(errors.SegmentExists):
        Segment.create("s", "1MiB", dir=segdir)
    if target_exists:
        assert target.read_bytes() == b"precious"
    else:
        assert not target.exists()


def test_new_segments_are_private_to_their_user(segdir: str) -> None:
    with Segment.create("s", "1MiB", dir=segdir) as seg:
        st = os.stat(seg.path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()


def test_explicit_mode_is_applied_exactly(segdir: str) -> None:
    with Segment.create("s", "1MiB", dir=segdir, mode=0o640) as seg:
        assert stat.S_IMODE(os.stat(seg.path).st_mode) == 0o640


def test_open_creates_once_then_attaches(segdir: str) -> None:
    with Segment.open("s", "1MiB", dir=segdir) as first:
        first.counter("c").add(1)
        with Segment.open("s", "8MiB", dir=segdir) as second:
            assert second.size == 1024**2, "open() of an existing segment keeps its size"
            assert second.counter("c").load() == 1


def test_unlink_removes_the_name_but_not_the_mapping(segdir: str) -> None:
    seg = Segment.create("s", "1MiB", dir=segdir)
    counter = seg.counter("c")
    seg.unlink()
    assert herdcache.list_segments(segdir) == []
    with pytest.raises(errors.SegmentNotFound):
        Segment.attach("s", dir=segdir)
    assert counter.add(1) == 1
    del counter
    seg.close()
    with pytest.raises(errors.SegmentNotFound, match="no segment"):
        herdcache.remove("s", dir=segdir)


def test_anonymous_segments_have_no_file() -> None:
    with Segment.anonymous("1MiB") as seg:
        assert seg.path is None and seg.name is None
        assert seg.info()["anonymous"] is True
        seg.unlink()  # nothing to remove: a no-op
        assert seg.counter("c").add(2) == 2
