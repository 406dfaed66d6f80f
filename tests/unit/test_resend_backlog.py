"""When the group has read past the mark a held resend waits for."""

from __future__ import annotations

from coordinator.reports.resend import read_past


def test_read_past_when_every_partition_reached_its_mark() -> None:
    assert read_past({0: 10, 1: 4}, ends={0: 12, 1: 4}, committed={0: 10, 1: 5})


def test_not_read_past_while_one_partition_is_behind() -> None:
    assert not read_past({0: 10, 1: 4}, ends={0: 12, 1: 9}, committed={0: 10, 1: 3})


def test_a_partition_never_committed_on_has_read_nothing() -> None:
    assert not read_past({0: 1}, ends={0: 1}, committed={0: None})
    assert read_past({0: 0}, ends={0: 0}, committed={0: None})


def test_a_partition_that_now_ends_before_its_mark_lost_what_it_held() -> None:
    # the broker restarted empty: what was before the mark is not there to be read
    assert read_past({0: 500, 1: 20}, ends={0: 3, 1: 25}, committed={0: None, 1: 20})
    assert not read_past({0: 500, 1: 20}, ends={0: 3, 1: 25}, committed={0: None, 1: 19})


def test_an_empty_mark_is_read_past() -> None:
    assert read_past({}, ends={0: 5}, committed={})


def test_a_stalled_partition_is_not_waited_for() -> None:
    assert read_past({0: 10, 1: 4}, ends={0: 12, 1: 4}, committed={0: 3, 1: 4}, stalled={0})
    assert not read_past({0: 10, 1: 4}, ends={0: 12, 1: 4}, committed={0: 3, 1: 2},
                         stalled={0})
