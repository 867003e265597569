"""Counters: atomic int64s with C11 semantics."""

from __future__ import annotations

import pytest

from herdcache import Counter, Segment


@pytest.fixture
def counter(seg: Segment) -> Counter:
    return seg.counter("c")


def test_new_counter_is_zero_and_add_returns_the_new_value(counter: Counter) -> None:
    assert counter.load() == 0
    assert counter.add() == 1
    assert counter.add(10) == 11
    assert counter.add(-12) == -1
    assert int(counter) == -1
    assert "Counter -1" in repr(counter)


def test_store_and_load(counter: Counter) -> None:
    counter.store(42)
    assert counter.load() == 42
    counter.store(-(2**63))
    assert counter.load() == -(2**63)


def test_exchange_sets_and_returns_the_old_value(counter: Counter) -> None:
    counter.store(5)
    assert counter.exchange(9) == 5
    assert counter.load() == 9
    assert counter.exchange(9) == 9


def test_compare_exchange_sets_only_on_a_match(counter: Counter) -> None:
    counter.store(3)
    assert counter.compare_exchange(4, 100) is False
    assert counter.load() == 3, "a failed compare_exchange changed the value"
    assert counter.compare_exchange(3, 100) is True
    assert counter.load() == 100
    assert counter.compare_exchange(3, 7) is False


def test_add_wraps_like_int64(counter: Counter) -> None:
    counter.store(2**63 - 1)
    assert counter.add(1) == -(2**63)
    assert counter.add(-1) == 2**63 - 1


def test_values_outside_int64_are_refused(counter: Counter) -> None:
    with pytest.raises(OverflowError):
        counter.store(2**63)
    with pytest.raises(OverflowError):
        counter.add(2**64)
    assert counter.load() == 0


def test_same_name_is_the_same_counter(seg: Segment) -> None:
    a, b = seg.counter("n"), seg.counter("n")
    a.add(3)
    assert b.load() == 3
    assert seg.counter("m").load() == 0
