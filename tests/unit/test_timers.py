"""Which timers a worker rebuilds from an approval record alone: pure, with exact times."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.escalation.policy import Timer
from coordinator.escalation.timers import Timers, restored_timers
from coordinator.model.approval import ApprovalRecord
from tests.unit.factories import T0, make_request, record_at

DUE = T0 + timedelta(seconds=100)


def level_record(**changes: object) -> ApprovalRecord:
    """Level 1 of two, 100 s each, reminders at 50 % and 80 %, due at T0 + 100 s."""
    record = record_at(make_request([["a1"], ["b1"]], within_s=100, reminders=[0.5, 0.8]),
                       1, DUE, ["a1"])
    return record.evolve(**changes)


def rebuilt(seconds: float, **changes: object) -> list[tuple[str, int, str, timedelta]]:
    """(kind, number, job id, time from T0) of the timers rebuilt `seconds` after T0."""
    record = level_record(**changes)
    return [(t.kind, t.number, t.job_id, t.at - T0)
            for t in restored_timers(record, T0 + timedelta(seconds=seconds))]


def test_a_level_not_yet_reminded_gets_its_deadline_and_every_reminder() -> None:
    """Rebuilt before the first reminder: the deadline and both reminders, at their times."""
    assert rebuilt(10) == [
        ("deadline", 1, "APR-00001-1:deadline:1:0", timedelta(seconds=100)),
        ("reminder", 1, "APR-00001-1:reminder:1:50", timedelta(seconds=50)),
        ("reminder", 1, "APR-00001-1:reminder:1:80", timedelta(seconds=80)),
    ]


def test_of_the_reminders_already_past_only_the_latest_is_kept() -> None:
    """Rebuilt at 90 s of 100: the 80 % reminder goes out late, the 50 % one not at all."""
    assert rebuilt(90) == [
        ("deadline", 1, "APR-00001-1:deadline:1:0", timedelta(seconds=100)),
        ("reminder", 1, "APR-00001-1:reminder:1:80", timedelta(seconds=80)),
    ]


def test_a_reminder_exactly_due_counts_as_past() -> None:
    """Rebuilt at exactly 80 s: both reminders are due, only the 80 % one is kept."""
    assert [job for _, _, job, _ in rebuilt(80)] == [
        "APR-00001-1:deadline:1:0", "APR-00001-1:reminder:1:80"]


def test_a_passed_deadline_keeps_no_reminder() -> None:
    """Rebuilt after the deadline: only the deadline, which fires at once."""
    assert rebuilt(130) == [
        ("deadline", 1, "APR-00001-1:deadline:1:0", timedelta(seconds=100))]


def test_a_held_request_gets_its_next_hold_alert() -> None:
    """Held with two alerts sent: alert 3, at the stored due time."""
    assert rebuilt(0, phase="held", alerts=2) == [
        ("hold", 3, "APR-00001-1:hold:3:0", timedelta(seconds=100))]


@pytest.mark.parametrize("changes", [
    {"status": "approved"}, {"status": "superseded"}, {"phase": "duty_officer", "due": None},
    {"due": None},
], ids=["approved", "superseded", "duty-officer", "no-due"])
def test_a_request_no_clock_runs_for_has_no_timers(changes: dict[str, object]) -> None:
    """Decided, superseded, waiting for a duty officer, or without a due time: nothing."""
    assert rebuilt(10, **changes) == []


def test_a_scheduled_timer_fires_its_handler_once_with_its_own_arguments() -> None:
    """The job every timer runs (a function whose signature is worked out once) is taken
    by APScheduler's argument check and called with the timer's kind, request, number and
    fraction; the same timer scheduled twice is one job."""
    fired: list[tuple[str, str, int, float]] = []

    async def handler(kind: str, approval_id: str, number: int, fraction: float) -> None:
        fired.append((kind, approval_id, number, fraction))

    async def run() -> list[str]:
        timers = Timers(handler)
        timers.start(paused=True)
        now = datetime.now(UTC)
        reminder = Timer("reminder", "APR-00007-1", 2, now - timedelta(seconds=1), 0.5)
        timers.schedule(reminder)
        timers.schedule(reminder)
        jobs = [job.id for job in timers.scheduler.get_jobs()]
        # what APScheduler's argument check asks, given without working it out again
        assert inspect.signature(timers._fire, follow_wrapped=False) is vars(
            timers._fire)["__signature__"]
        timers.resume()
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a second job, were there one, would have fired by now
        timers.scheduler.shutdown(wait=False)
        return jobs

    assert asyncio.run(run()) == ["APR-00007-1:reminder:2:50"]
    assert fired == [("reminder", "APR-00007-1", 2, 0.5)]
