"""How long a worker's fetch may wait at the broker: short while records flow, longer once
they have stopped for a second (coordinator.faust_kafka.FetchPace)."""

from __future__ import annotations

from coordinator.faust_kafka import FetchPace, pace


def test_records_keep_the_short_wait_for_a_second() -> None:
    pace = FetchPace(busy_ms=10, idle_ms=50, linger_s=1.0)
    assert pace.after(True, 100.0) == 10
    assert pace.after(False, 100.5) == 10
    assert pace.after(False, 100.999) == 10


def test_a_quiet_second_lengthens_the_wait_and_a_record_shortens_it() -> None:
    pace = FetchPace(busy_ms=10, idle_ms=50, linger_s=1.0)
    pace.after(True, 100.0)
    assert pace.after(False, 101.0) == 50
    assert pace.after(False, 160.0) == 50
    assert pace.after(True, 160.05) == 10


def test_before_any_record_the_consumer_is_idle() -> None:
    assert FetchPace(busy_ms=10, idle_ms=50).after(False, 0.0) == 50


def test_an_expected_answer_keeps_the_short_wait_without_records() -> None:
    """While an approval is pending the worker expects its answer: the short wait, however
    long nothing has come; once nothing is expected, the idle wait again."""
    pace = FetchPace(busy_ms=10, idle_ms=50, linger_s=1.0)
    pace.expecting = True
    assert pace.after(False, 0.0) == 10
    assert pace.after(False, 3600.0) == 10
    pace.expecting = False
    assert pace.after(False, 3601.0) == 50


def test_the_idle_wait_is_never_shorter_than_the_busy_one() -> None:
    assert FetchPace(busy_ms=100, idle_ms=20).after(False, 5.0) == 100


async def test_pace_sets_the_next_wait_after_each_fetch() -> None:
    """`pace` wraps the fetcher's per-fetch call: arguments and answer pass through, and
    the fetcher's wait is set from the answer."""
    class Fetcher:
        def __init__(self, answers: list[bool]) -> None:
            self._fetch_max_wait_ms = 999
            self.calls: list[tuple[object, ...]] = []
            self.answers = answers

        async def _proc_fetch_request(self, *args: object) -> bool:
            self.calls.append(args)
            return self.answers.pop(0)

    flowing = Fetcher([True, False])
    pace(flowing, FetchPace(busy_ms=10, idle_ms=50, linger_s=3600.0))
    assert await flowing._proc_fetch_request("assignment", 0, "request") is True
    assert flowing.calls == [("assignment", 0, "request")]
    assert flowing._fetch_max_wait_ms == 10
    assert await flowing._proc_fetch_request("assignment", 0, "request") is False
    assert flowing._fetch_max_wait_ms == 10  # a record came within the linger

    quiet = Fetcher([False])
    pace(quiet, FetchPace(busy_ms=10, idle_ms=50))
    assert await quiet._proc_fetch_request("assignment", 0, "request") is False
    assert quiet._fetch_max_wait_ms == 50
