"""The intake reads the incident a report most likely joins with the report's own record
(`OpenIncidents`: where this process saw reports of its kind and area go). The guess only
saves a round trip: right, wrong, stale or gone, the report lands where it would without it
(a private redis-server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.events import IncidentClosed, Report, Severity
from coordinator.incidents.actions import close_incident
from coordinator.incidents.intake import OpenIncidents, TakenIn, take_in_report
from coordinator.runtime import Runtime

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
WINDOW_S = 600.0


def report(n: int, area: str = "hn-ba-dinh", minutes: float = 0.0, **extra: object) -> Report:
    return Report(id=f"token:t:{n}", kind="flood", severity=Severity.severe, area=area,
                  title=f"Ngập {n}", received_at=NOW + timedelta(minutes=minutes),
                  **extra)  # type: ignore[arg-type]


async def watch_calls(rt: Runtime) -> int:
    """WATCH commands the server has run (one a read before the writes, in this intake)."""
    stats = await rt.redis.info("commandstats")
    return int(stats.get("cmdstat_watch", {}).get("calls", 0))


async def test_reports_of_one_place_join_the_incident_they_were_seen_going_to(
        rt: Runtime) -> None:
    seen = OpenIncidents()
    first = await take_in_report(rt.redis, rt.keys, report(1), WINDOW_S, seen=seen)
    assert first.opened and seen.likely(report(2)) == first.incident_id
    watches = await watch_calls(rt)
    second = await take_in_report(rt.redis, rt.keys, report(2, minutes=1), WINDOW_S, seen=seen)
    assert (second.incident_id, second.opened) == (first.incident_id, False)
    assert await watch_calls(rt) - watches == 1  # the incident read with the report's record
    unguessed = await take_in_report(rt.redis, rt.keys, report(6, minutes=1), WINDOW_S)
    assert unguessed.incident_id == first.incident_id
    assert await watch_calls(rt) - watches == 1 + 2  # without a guess: read after it
    assert await rt.redis.hget(rt.keys.incident(first.incident_id), "report_count") == "3"
    # a replay is where it was, and teaches nothing new
    seen.saw(report(7), TakenIn("INC-77777", opened=True, first_time=True))  # marked
    again = await take_in_report(rt.redis, rt.keys, report(2, minutes=1), WINDOW_S, seen=seen)
    assert (again.incident_id, again.first_time) == (first.incident_id, False)
    assert seen.likely(report(8)) == "INC-77777"  # the replay taught nothing


async def test_a_wrong_or_stale_guess_changes_nothing(rt: Runtime) -> None:
    """Another worker opened a newer incident for the place; the one guessed is closed; the
    one guessed is gone: each report goes where the open key says, as without a guess."""
    elsewhere = OpenIncidents()  # another worker's
    old = await take_in_report(rt.redis, rt.keys, report(1), WINDOW_S, seen=elsewhere)
    mine = OpenIncidents()
    mine.saw(report(2), old)  # as if this worker had seen it too
    closed = await close_incident(rt, IncidentClosed(id="close-1", incident_id=old.incident_id,
                                                     actor="duty-1"), NOW)
    assert closed.accepted
    newer = await take_in_report(rt.redis, rt.keys, report(2, minutes=1), WINDOW_S,
                                 seen=elsewhere)
    assert newer.opened and newer.incident_id != old.incident_id
    assert mine.likely(report(3)) == old.incident_id  # stale: closed, and not the open one
    joined = await take_in_report(rt.redis, rt.keys, report(3, minutes=2), WINDOW_S, seen=mine)
    assert (joined.incident_id, joined.opened) == (newer.incident_id, False)
    assert mine.likely(report(4)) == newer.incident_id  # learnt
    # a guess of an incident that does not exist (another Loa's prefix, or pruned)
    gone = OpenIncidents()
    gone.saw(report(4), TakenIn("INC-99999", opened=True, first_time=True))
    fourth = await take_in_report(rt.redis, rt.keys, report(4, minutes=3), WINDOW_S, seen=gone)
    assert fourth.incident_id == newer.incident_id
    # past the correlation window, the guessed incident is not joined: a new one opens
    late = await take_in_report(rt.redis, rt.keys, report(5, minutes=30), WINDOW_S, seen=mine)
    assert late.opened and late.incident_id not in (old.incident_id, newer.incident_id)


async def test_a_report_that_names_its_incident_is_read_with_its_record(rt: Runtime) -> None:
    """A duty officer's attachment: the incident it names is the one read first, and joined
    while open (a closed one: a new incident opens, as before)."""
    seen = OpenIncidents()
    first = await take_in_report(rt.redis, rt.keys, report(1), WINDOW_S, seen=seen)
    other_place = report(2, area="hn-cau-giay", minutes=1, attach_to=first.incident_id)
    assert seen.likely(other_place) == first.incident_id
    attached = await take_in_report(rt.redis, rt.keys, other_place, WINDOW_S, seen=seen)
    assert (attached.incident_id, attached.opened) == (first.incident_id, False)
    assert seen.likely(report(3, area="hn-cau-giay")) is None  # an attachment teaches nothing
    await close_incident(rt, IncidentClosed(id="close-2", incident_id=first.incident_id,
                                            actor="duty-1"), NOW)
    after = await take_in_report(rt.redis, rt.keys,
                                 report(3, minutes=2, attach_to=first.incident_id), WINDOW_S,
                                 seen=seen)
    assert after.opened and after.incident_id != first.incident_id


async def test_a_report_taken_in_late_does_not_take_the_situation_from_its_incident(
        rt: Runtime) -> None:
    """Report 2 (received 90 minutes after report 1) opened the flood's incident; report 1,
    resent from the outbox after an outage, comes in last and is outside the window: it
    opens its own incident, and the flood's next report still joins the one that holds the
    flood (it had joined the late one's, and a third opened)."""
    late_window_s = 3600.0
    holds = await take_in_report(rt.redis, rt.keys, report(2, minutes=90), late_window_s)
    late = await take_in_report(rt.redis, rt.keys, report(1), late_window_s)
    assert holds.opened and late.opened and late.incident_id != holds.incident_id
    assert await rt.redis.get(rt.keys.open_incident(report(3).correlation_key())) == (
        holds.incident_id)
    joined = await take_in_report(rt.redis, rt.keys, report(3, minutes=100), late_window_s)
    assert joined == TakenIn(holds.incident_id, opened=False, first_time=True)
    # An incident with nothing newer than the report still passes it on, as before.
    after = await take_in_report(rt.redis, rt.keys, report(4, minutes=200), late_window_s)
    assert after.opened and await rt.redis.get(rt.keys.open_incident(
        report(4).correlation_key())) == after.incident_id
