"""The incident record and its transitions: the Redis hash as stored today reads and writes
back exactly, each transition writes exactly its fields, and an illegal one is refused."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.errors import IncidentTransitionError, LoaError
from coordinator.events import Report, ReportSource, Severity
from coordinator.model.incident import (
    DRAFTABLE,
    OPEN,
    TRANSITIONS,
    Incident,
    IncidentStatus,
    approved,
    attached,
    closed,
    draft_failed,
    exhausted,
    handed_to_duty_officer,
    opened,
    published,
    returned,
    sent_for_approval,
)

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 7, 5, 30, 250000, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "incident-states.md"

# The hash exactly as intake wrote it when the report came in (all values are strings in Redis).
OPENED_HASH = {
    "id": "INC-00042", "kind": "flood", "area": "hoan-kiem", "severity": "severe",
    "title": "Ngập sâu phố Huế", "details": "0.5 m", "status": "open", "playbook": "",
    "approval_id": "", "statement_id": "", "report_count": "1",
    "opened_at": "2026-11-22T07:00:00+00:00", "last_report_at": "2026-11-22T07:00:00+00:00",
    "updated_at": "2026-11-22T07:00:00+00:00", "chosen_playbook": "",
    "source_actor": "token:fire", "source_scope": "department:fire", "source_verified": "1",
}


def report(severity: Severity = Severity.severe, verified: bool = True,
           scope: str = "department:fire", at: datetime = T0) -> Report:
    return Report(id="fire:r-0001", kind="flood", severity=severity, area="hoan-kiem",
                  title="Ngập sâu phố Huế", details="0.5 m", received_at=at,
                  source=ReportSource(actor="token:fire", role="department", scope=scope,
                                      verified=verified))


def incident(status: IncidentStatus, **changes: object) -> Incident:
    return replace(Incident.from_hash(OPENED_HASH), status=status, **changes)  # type: ignore[arg-type]


def test_a_report_opens_an_incident_stored_as_today() -> None:
    """`opened` turns a report into the hash exactly as intake stores it today."""
    assert opened("INC-00042", report()).to_hash() == OPENED_HASH


def test_the_hash_reads_into_typed_fields() -> None:
    """A stored hash reads into typed fields, with the later fields it lacks as None."""
    inc = Incident.from_hash(OPENED_HASH)
    assert (inc.id, inc.severity, inc.status, inc.report_count, inc.source_verified) == (
        "INC-00042", Severity.severe, IncidentStatus.open, 1, True)
    assert inc.opened_at == T0
    assert (inc.draft_id, inc.status_reason, inc.published, inc.closed_at,
            inc.severity_scope, inc.extra) == (None, None, None, None, None, {})


def test_a_hash_with_every_later_field_round_trips_exactly() -> None:
    """A hash with every later field, and an unknown one, reads and writes back unchanged."""
    later = {**OPENED_HASH, "status": "closed", "playbook": "flood-severe",
             "draft_id": "DRF-00042-2", "approval_id": "APR-00042-2",
             "statement_id": "STM-00042-1", "report_count": "3",
             "status_reason": "rejected by a1: Số liệu chưa khớp",
             "published": '["STM-00042-1"]', "closed_at": "2026-11-22T07:05:30.250000+00:00",
             "updated_at": "2026-11-22T07:05:30.250000+00:00", "severity_scope": "",
             "field_from_elsewhere": "kept"}
    inc = Incident.from_hash(later)
    assert inc.to_hash() == later
    assert (inc.published, inc.closed_at, inc.severity_scope, inc.extra) == (
        ("STM-00042-1",), T1, "", {"field_from_elsewhere": "kept"})


def test_open_lists_every_status_but_closed() -> None:
    """OPEN is every status but closed, and DRAFTABLE every open status but approved."""
    assert {s.value for s in OPEN} == {"open", "needs_duty_officer", "awaiting_approval",
                                       "approved", "published", "returned", "all_clear"}
    assert {s.value for s in DRAFTABLE} == {"open", "needs_duty_officer", "awaiting_approval",
                                            "published", "returned", "all_clear"}
    assert "published" in OPEN and "closed" not in OPEN  # plain strings from a hash work
    assert [s.value for s in IncidentStatus] == [
        "open", "needs_duty_officer", "awaiting_approval", "approved", "published",
        "returned", "all_clear", "closed"]


def test_an_attached_report_raises_the_severity_only_when_verified() -> None:
    """Attaching a report raises the severity only if verified, and keeps last_report_at latest."""
    inc = Incident.from_hash(OPENED_HASH)
    assert attached(inc, report(Severity.extreme, at=T1)) == {
        "severity": "extreme", "last_report_at": "2026-11-22T07:05:30.250000+00:00",
        "updated_at": "2026-11-22T07:05:30.250000+00:00", "severity_scope": "department:fire"}
    assert attached(inc, report(Severity.extreme, verified=False, at=T1)) == {
        "severity": "severe", "last_report_at": "2026-11-22T07:05:30.250000+00:00",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    late = report(Severity.minor, at=datetime(2026, 11, 22, 6, 0, tzinfo=UTC))
    assert attached(inc, late) == {  # an older report does not move last_report_at back
        "severity": "severe", "last_report_at": "2026-11-22T07:00:00+00:00",
        "updated_at": "2026-11-22T06:00:00+00:00"}


def test_planning_writes_exactly_its_fields() -> None:
    """draft_failed, sent_for_approval and handed_to_duty_officer write exactly their fields."""
    inc = Incident.from_hash(OPENED_HASH)
    assert draft_failed(inc, "flood-severe", "'x' is undefined", T1) == {
        "playbook": "flood-severe", "status": "needs_duty_officer",
        "status_reason": "'x' is undefined", "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    assert sent_for_approval(inc, "flood-severe", "DRF-00042-1", "APR-00042-1", T1) == {
        "playbook": "flood-severe", "draft_id": "DRF-00042-1", "status": "awaiting_approval",
        "approval_id": "APR-00042-1", "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    assert handed_to_duty_officer(inc, "fallback", "DRF-00042-1", "no rule matched", T1) == {
        "playbook": "fallback", "draft_id": "DRF-00042-1", "status": "needs_duty_officer",
        "status_reason": "no rule matched", "approval_id": "",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}


def test_a_redraft_may_follow_any_open_status_but_approved() -> None:
    """A draft may be sent for approval from every draftable status, but not from approved."""
    for status in DRAFTABLE:
        assert sent_for_approval(incident(status), "p", "DRF-00042-2", "APR-00042-2", T1)[
            "status"] == "awaiting_approval"
    with pytest.raises(IncidentTransitionError):
        sent_for_approval(incident(IncidentStatus.approved), "p", "D", "A", T1)


def test_decisions_and_the_exhaustion_rule_write_exactly_their_fields() -> None:
    """exhausted, approved and returned each write exactly their fields on a waiting incident."""
    waiting = incident(IncidentStatus.awaiting_approval)
    assert exhausted(waiting, "approval chain exhausted", T1) == {
        "status_reason": "approval chain exhausted",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    assert approved(waiting, "STM-00042-1", T1) == {
        "status": "approved", "statement_id": "STM-00042-1",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    assert returned(waiting, "rejected by a1: sai", T1) == {
        "status": "returned", "status_reason": "rejected by a1: sai",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}


def test_publication_sets_published_or_all_clear_and_keeps_closed_closed() -> None:
    """Publishing appends the statement, sets published or all_clear, and leaves closed closed."""
    first = incident(IncidentStatus.approved)
    assert published(first, "STM-00042-1", False, T1) == {
        "status": "published", "published": '["STM-00042-1"]',
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    again = incident(IncidentStatus.approved, published=("STM-00042-1",))
    assert published(again, "STM-00042-2", True, T1) == {
        "status": "all_clear", "published": '["STM-00042-1", "STM-00042-2"]',
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}
    assert published(incident(IncidentStatus.closed), "STM-00042-1", False, T1)[
        "status"] == "closed"


def test_closing_writes_the_reason_and_the_time() -> None:
    """Closing writes the closed status, its reason, closed_at and updated_at."""
    assert closed(incident(IncidentStatus.published), "đã xử lý xong", T1) == {
        "status": "closed", "status_reason": "đã xử lý xong",
        "closed_at": "2026-11-22T07:05:30.250000+00:00",
        "updated_at": "2026-11-22T07:05:30.250000+00:00"}


def test_an_illegal_transition_is_refused_with_what_and_why() -> None:
    """An illegal transition raises a LoaError naming the incident, its status and the move."""
    with pytest.raises(IncidentTransitionError) as refused:
        closed(incident(IncidentStatus.closed), "again", T1)
    assert str(refused.value) == "INC-00042 is closed: it cannot be closed"
    assert isinstance(refused.value, LoaError)
    assert (refused.value.incident_id, refused.value.status, refused.value.transition) == (
        "INC-00042", "closed", "closed")
    with pytest.raises(IncidentTransitionError, match="is returned: it cannot be approved"):
        approved(incident(IncidentStatus.returned), "STM-00042-1", T1)
    with pytest.raises(IncidentTransitionError, match="is published: it cannot be published"):
        published(incident(IncidentStatus.published), "STM-00042-2", False, T1)
    with pytest.raises(IncidentTransitionError, match="is awaiting_approval: it cannot be "
                                                      "draft_failed"):
        draft_failed(incident(IncidentStatus.awaiting_approval), "p", "e", T1)
    with pytest.raises(IncidentTransitionError, match="is closed: it cannot be attached"):
        attached(incident(IncidentStatus.closed), report())


def test_evolve_applies_a_transition_to_the_record() -> None:
    """evolve returns the record with a transition's written fields applied as typed values."""
    inc = Incident.from_hash(OPENED_HASH).evolve(
        sent_for_approval(Incident.from_hash(OPENED_HASH), "p", "DRF-00042-1", "APR-1", T1))
    assert (inc.status, inc.draft_id, inc.approval_id, inc.updated_at) == (
        IncidentStatus.awaiting_approval, "DRF-00042-1", "APR-1", T1)


def test_the_state_diagram_draws_exactly_the_transition_table() -> None:
    """docs/incident-states.md draws every (from, to) of every transition but `attached`
    (which changes no status); its `OpenStatuses` stands for each open status."""
    arrows = re.findall(r"^\s*(\w+) --> (\w+) : (\w+):", DOC.read_text("utf-8"), re.M)
    drawn = {(start, end, name) for a, end, name in arrows
             for start in (sorted(OPEN) if a == "OpenStatuses" else [a])}
    table = {(start.value, end.value, name) for name, edges in TRANSITIONS.items()
             for start, end in edges if name != "attached"}
    assert len(arrows) == 20
    assert drawn == table
