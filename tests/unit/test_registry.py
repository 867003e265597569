"""Named structures: found by name, allocated once, aligned, never freed."""

from __future__ import annotations

import pytest

from herdcache import Segment, errors

REGISTRY_CAPACITY = 256


def test_first_call_allocates_zeroed_memory_later_calls_find_it(named: Segment) -> None:
    view, found = named.struct("stats", 100)
    assert not found
    assert len(view) == 100 and bytes(view) == bytes(100)
    view[:5] = b"hello"
    again, found_again = named.struct("stats", 100)
    assert found_again
    assert bytes(again[:5]) == b"hello"
    again[5:6] = b"!"
    assert bytes(view[:6]) == b"hello!", "the two views are not the same memory"


def test_views_are_64_byte_aligned_and_never_overlap(named: Segment) -> None:
    sizes = {"one": 1, "line": 64, "over": 65, "odd": 100, "page": 4096, "zero": 0, "three": 3}
    for name, size in sizes.items():
        named.struct(name, size)
    named.counter("c")
    named.lock("l")
    named.condition("cv")
    structs = sorted(named.structs(), key=lambda s: s.offset)
    assert {s.name for s in structs} == set(sizes) | {"c", "l", "cv"}
    for info in structs:
        assert info.offset % 64 == 0, info
        assert info.offset >= named.info()["data_offset"]
    for before, after in zip(structs, structs[1:]):
        assert before.offset + max(before.size, 1) <= after.offset, (before, after)
    assert structs[-1].offset + structs[-1].size <= named.info()["used"] <= named.size


def test_struct_info_reports_kind_and_size(named: Segment) -> None:
    named.struct("raw", 10)
    named.counter("hits")
    named.lock("guard")
    named.condition("ready")
    kinds = {s.name: (s.kind, s.size) for s in named.structs()}
    assert kinds == {"raw": ("struct", 10), "hits": ("counter", 64), "guard": ("lock", 64), "ready": ("condition", 64)}
    assert named.names() == ["raw", "hits", "guard", "ready"]
    assert named.info()["structs"] == 4


def test_other_size_is_struct_mismatch_with_both_sizes(named: Segment) -> None:
    named.struct("x", 10)
    with pytest.raises(errors.StructMismatch, match="10 bytes, asked for 11"):
        named.struct("x", 11)
    with pytest.raises(errors.StructMismatch, match="10 bytes, asked for 9"):
        named.struct("x", 9)  # smaller is no better: the layout differs
    assert named.struct("x", 10)[1] is True


@pytest.mark.parametrize(
    "make, other",
    [
        (lambda s: s.lock("x"), lambda s: s.counter("x")),
        (lambda s: s.counter("x"), lambda s: s.lock("x")),
        (lambda s: s.condition("x"), lambda s: s.lock("x")),
        (lambda s: s.counter("x"), lambda s: s.struct("x", 64)),
        (lambda s: s.struct("x", 64), lambda s: s.condition("x")),
    ],
    ids=["lock-as-counter", "counter-as-lock", "condition-as-lock", "counter-as-struct", "struct-as-condition"],
)
def test_other_kind_is_struct_mismatch(named: Segment, make, other) -> None:
    make(named)
    with pytest.raises(errors.StructMismatch, match="is a"):
        other(named)


def test_257th_name_is_segment_full_with_the_limit(named: Segment) -> None:
    for i in range(REGISTRY_CAPACITY):
        named.counter(f"c{i}").add(i)
    with pytest.raises(errors.SegmentFull, match=f"all {REGISTRY_CAPACITY} names") as info:
        named.counter("one-too-many")
    assert isinstance(info.value, MemoryError)
    assert named.counter("c255").load() == 255, "existing names still work"
    assert len(named.names()) == REGISTRY_CAPACITY


def test_no_room_is_segment_full_with_the_numbers(segdir: str) -> None:
    with Segment.create("small", "1MiB", dir=segdir) as seg:
        free = seg.info()["free"]
        with pytest.raises(errors.SegmentFull) as info:
            seg.struct("big", free + 1)
        message = str(info.value)
        assert f"needs {free + 1} bytes" in message and f"{free} of {seg.size} are free" in message
        view, _ = seg.struct("exact", free)  # what is free can be had, to the byte
        view[-1] = 255
        del view
        assert seg.info()["free"] == 0
        with pytest.raises(errors.SegmentFull):
            seg.counter("c")


def test_used_and_free_track_allocations(named: Segment) -> None:
    before = named.info()
    named.struct("a", 1000)
    after = named.info()
    assert 1000 <= after["used"] - before["used"] < 1000 + 64  # plus alignment
    assert after["used"] + after["free"] == after["size"] == named.size


def test_close_refuses_while_a_view_is_alive(named: Segment) -> None:
    view, _ = named.struct("buf", 16)
    with pytest.raises(errors.SegmentBusy, match="memoryview") as info:
        named.close()
    assert isinstance(info.value, BufferError)
    view[0] = 7  # the mapping is still there
    del view
    named.close()
    assert named.closed


def test_whole_segment_view_also_blocks_close(named: Segment) -> None:
    whole = memoryview(named)
    assert len(whole) == named.size
    with pytest.raises(errors.SegmentBusy):
        named.close()
    whole.release()
    named.close()


def test_everything_raises_segment_closed_after_close(named: Segment) -> None:
    counter = named.counter("c")
    lock = named.lock("l")
    named.close()
    named.close()  # closing twice is harmless
    for call in (named.names, named.info, lambda: named.struct("x", 1), counter.load, lock.acquire, lambda: named.size):
        with pytest.raises(errors.SegmentClosed):
            call()
    assert "closed" in repr(named)


def test_attaching_twice_in_one_process_shares_one_mapping(named: Segment) -> None:
    named.counter("c").add(1)
    with Segment.attach("seg", dir=named.dir) as again:
        assert again.counter("c").add(1) == 2
        assert again.info()["slot"] == named.info()["slot"]
        assert again.info()["attached"] == 1
    assert named.counter("c").load() == 2, "closing the second handle unmapped the first"


def test_segment_is_a_context_manager(segdir: str) -> None:
    with Segment.create("s", "1MiB", dir=segdir) as seg:
        assert not seg.closed
    assert seg.closed
