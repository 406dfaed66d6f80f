"""What happens when a request's clock runs out. Pure: `now` and the people are arguments.

`next_step(record, fired_level, now, people)` returns what to do as data
(Escalate, Exhaust or Ignore); the caller does it, guarded by a compare-and-set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator.city import Person
from coordinator.events import ApprovalRequest, ChainLevelSnapshot, Severity
from coordinator.model.approval import ApprovalRecord


@dataclass(frozen=True)
class LevelEntry:
    """A level the request enters: who holds it, until when, and what was routed around."""

    level: int
    holders: list[str]
    deadline: datetime
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Escalate:
    """Move the request up to `entry.level`."""

    entry: LevelEntry
    lateness_s: float


@dataclass(frozen=True)
class Exhaust:
    """The chain is used up: apply the playbook's rule (`hold`, `duty_officer`, `publish`)."""

    rule: str
    notes: list[str]
    lateness_s: float


@dataclass(frozen=True)
class Ignore:
    """Nothing to do (decided already, a stale or early timer)."""

    why: str


Step = Escalate | Exhaust | Ignore


def holders_for(level: ChainLevelSnapshot, people: Mapping[str, Person], now: datetime
                ) -> tuple[list[str], list[str]]:
    """The approvers of a level who can be asked now (a delegate stands in for one who is
    away), and a note for each one routed around. One the config no longer has (removed
    since the request was made) cannot be asked: the level does not wait for them."""
    holders: list[str] = []
    notes: list[str] = []
    for person_id in level.approvers:
        person = people.get(person_id)
        if person is None:
            notes.append(f"{person_id} is no longer in the config: not asked")
            continue
        away = person.away_until(now)
        if away is None:
            holders.append(person_id)
            continue
        delegate = people.get(person.delegate) if person.delegate else None
        if delegate is not None and delegate.away_until(now) is None:
            holders.append(delegate.id)
            notes.append(f"{person_id} is away until {away.isoformat()}: "
                         f"delegated to {delegate.id}")
        else:
            notes.append(f"{person_id} is away until {away.isoformat()} and has no "
                         "available delegate")
    return list(dict.fromkeys(holders)), notes


def enter_level(request: ApprovalRequest, level: int, people: Mapping[str, Person],
                now: datetime) -> tuple[LevelEntry | None, list[str]]:
    """The first level from `level` on with someone available; None when none is left."""
    notes: list[str] = []
    for snapshot in request.chain[level - 1:]:
        holders, routed = holders_for(snapshot, people, now)
        notes += routed
        if holders:
            deadline = now + timedelta(seconds=snapshot.within_s)
            return LevelEntry(snapshot.level, holders, deadline, notes), notes
        notes.append(f"level {snapshot.level} skipped: nobody available")
    return None, notes


def exhaustion_rule(request: ApprovalRequest) -> tuple[str, list[str]]:
    """The rule that applies when the chain is used up; `publish` only at extreme severity."""
    if request.on_exhausted == "publish" and request.severity != Severity.extreme:
        return "hold", [f"`publish` on exhaustion needs extreme severity (this is "
                        f"{request.severity}): holding for a decision instead"]
    return request.on_exhausted, []


def next_step(record: ApprovalRecord, fired_level: int, now: datetime,
              people: Mapping[str, Person]) -> Step:
    """What a deadline of `fired_level` firing at `now` means for the request."""
    if record.status != "pending":
        return Ignore(f"already {record.status}")
    if record.phase != "level" or record.level != fired_level:
        return Ignore(f"stale: the request is at level {record.level} ({record.phase})")
    if record.due is None or now < record.due:
        return Ignore("not due yet")
    lateness = (now - record.due).total_seconds()
    entry, notes = enter_level(record.request, fired_level + 1, people, now)
    if entry is not None:
        return Escalate(entry, lateness)
    rule, why = exhaustion_rule(record.request)
    return Exhaust(rule, notes + why, lateness)


def hold_alert_due(record: ApprovalRecord, alert_number: int, now: datetime) -> bool:
    """True when a held request's alert number `alert_number` should go out now."""
    return (record.status == "pending" and record.phase == "held"
            and record.alerts + 1 == alert_number and record.due is not None
            and now >= record.due)


@dataclass(frozen=True)
class Timer:
    """A moment at which an approval request must be looked at again."""

    kind: str  # deadline | reminder | hold
    approval_id: str
    number: int  # the level (deadline, reminder) or the alert number (hold)
    at: datetime
    fraction: float = 0.0

    @property
    def job_id(self) -> str:
        """Derived from what it is for, so scheduling it twice keeps one job."""
        return f"{self.approval_id}:{self.kind}:{self.number}:{round(self.fraction * 100)}"


def level_timers(record: ApprovalRecord) -> list[Timer]:
    """The deadline and reminders of the level a pending request is at."""
    if record.status != "pending" or record.phase != "level" or record.due is None:
        return []
    request = record.request
    level = record.current_level
    start = record.due - timedelta(seconds=level.within_s)
    timers = [Timer("deadline", request.id, record.level, record.due)]
    timers += [Timer("reminder", request.id, record.level,
                     start + timedelta(seconds=level.within_s * f), fraction=f)
               for f in level.reminders]
    return timers
