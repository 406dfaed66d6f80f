"""An incident as Loa keeps it: one Redis hash, read and written as a typed record, its
statuses, and the pure transitions between them (docs/incident-states.md draws them).

A transition checks the incident's current status and returns only the hash fields it
changes, for the caller to write inside its own MULTI (so a field another writer changes
meanwhile, like ``report_count``, is never overwritten with a stale value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from coordinator.errors import IncidentTransitionError
from coordinator.events import Report, Severity


class IncidentStatus(StrEnum):
    """Where an incident stands; the value is what the hash's `status` field holds."""

    open = "open"  # a report opened it; not planned yet
    needs_duty_officer = "needs_duty_officer"  # no approver to ask: the duty officer acts
    awaiting_approval = "awaiting_approval"  # a draft version waits for its approval
    approved = "approved"  # a statement was approved and is being published
    published = "published"  # a statement is public
    returned = "returned"  # an approver rejected the draft: back with the duty officer
    all_clear = "all_clear"  # the all-clear (a CAP Cancel) is public
    closed = "closed"  # the duty officer closed it; new reports open a new incident


OPEN = frozenset(set(IncidentStatus) - {IncidentStatus.closed})
"""The statuses a new report may join, and a duty officer may act on."""

DRAFTABLE = frozenset(OPEN - {IncidentStatus.approved})
"""The statuses from which a new draft version may be made (planned or redrafted)."""

TRANSLATABLE = frozenset({IncidentStatus.awaiting_approval, IncidentStatus.needs_duty_officer})
"""The statuses whose draft awaits a decision: the only ones a translator may add to (not
`returned`: an approver rejected it, and only a duty officer brings it back)."""

_S = IncidentStatus
Edges = frozenset[tuple[IncidentStatus, IncidentStatus]]
TRANSITIONS: dict[str, Edges] = {
    "attached": frozenset((s, s) for s in OPEN),  # a report joins: the status stays
    "draft_failed": frozenset({(_S.open, _S.needs_duty_officer)}),
    "sent_for_approval": frozenset((s, _S.awaiting_approval) for s in DRAFTABLE),
    "handed_to_duty_officer": frozenset((s, _S.needs_duty_officer) for s in DRAFTABLE),
    "exhausted": frozenset({(_S.awaiting_approval, _S.awaiting_approval)}),
    "approved": frozenset({(_S.awaiting_approval, _S.approved)}),
    "returned": frozenset({(_S.awaiting_approval, _S.returned)}),
    "published": frozenset({(_S.approved, _S.published), (_S.approved, _S.all_clear),
                            (_S.closed, _S.closed)}),
    "closed": frozenset((s, _S.closed) for s in OPEN),
}
"""transition -> every (from, to) it may make; docs/incident-states.md draws them all."""


@dataclass(frozen=True)
class Incident:
    """The stored incident. Fields a hash may lack are None when absent (their absence
    means something: no draft yet, never published, severity never raised)."""

    id: str
    kind: str
    area: str
    severity: Severity
    title: str
    details: str
    status: IncidentStatus
    opened_at: datetime
    last_report_at: datetime
    updated_at: datetime
    report_count: int = 1
    playbook: str = ""
    chosen_playbook: str = ""  # the duty officer's choice at opening, or ''
    approval_id: str = ""
    statement_id: str = ""
    source_actor: str = ""  # who opened it, as authenticated (decides the exhaustion rule)
    source_scope: str = ""
    source_verified: bool = False
    draft_id: str | None = None
    status_reason: str | None = None
    published: tuple[str, ...] | None = None  # ids of the statements made public, in order
    closed_at: datetime | None = None
    severity_scope: str | None = None  # the scope of whoever last raised the severity
    exercise: bool = False  # a drill (see Report.exercise)
    drill_list: str = ""  # a drill's test list, or '' (the drill opt-ins of the area)
    claim: str = ""  # false information: the claim as first reported (incidents.claims)
    merged_into: str = ""  # closed by a duty officer's merge into this incident
    fact: str = ""  # false information: the verified fact a correction states
    fact_source: str = ""  # ... and who or what establishes it
    extra: dict[str, str] = field(default_factory=dict)  # fields this record does not know

    @classmethod
    def from_hash(cls, row: dict[str, str]) -> Incident:
        """Decode the Redis hash; raises KeyError/ValueError on a corrupt row."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            id=row["id"], kind=row["kind"], area=row["area"],
            severity=Severity(row["severity"]), title=row["title"],
            details=row.get("details", ""), status=IncidentStatus(row["status"]),
            opened_at=datetime.fromisoformat(row["opened_at"]),
            last_report_at=datetime.fromisoformat(row["last_report_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            report_count=int(row.get("report_count", 1)), playbook=row.get("playbook", ""),
            chosen_playbook=row.get("chosen_playbook", ""),
            approval_id=row.get("approval_id", ""), statement_id=row.get("statement_id", ""),
            source_actor=row.get("source_actor", ""), source_scope=row.get("source_scope", ""),
            source_verified=row.get("source_verified") == "1",
            draft_id=row.get("draft_id"), status_reason=row.get("status_reason"),
            published=(tuple(json.loads(row["published"] or "[]"))
                       if "published" in row else None),
            closed_at=datetime.fromisoformat(row["closed_at"]) if "closed_at" in row else None,
            severity_scope=row.get("severity_scope"),
            exercise=row.get("exercise") == "1", drill_list=row.get("drill_list", ""),
            claim=row.get("claim", ""), merged_into=row.get("merged_into", ""),
            fact=row.get("fact", ""), fact_source=row.get("fact_source", ""),
            extra={k: v for k, v in row.items() if k not in known},
        )

    def to_hash(self) -> dict[str, str]:
        """The Redis hash fields (absent ones left out, unknown ones kept as they were)."""
        optional = {"draft_id": self.draft_id, "status_reason": self.status_reason,
                    "published": None if self.published is None
                    else json.dumps(list(self.published)),
                    "closed_at": self.closed_at.isoformat() if self.closed_at else None,
                    "severity_scope": self.severity_scope,
                    "exercise": "1" if self.exercise else None,
                    "drill_list": self.drill_list or None, "claim": self.claim or None,
                    "merged_into": self.merged_into or None, "fact": self.fact or None,
                    "fact_source": self.fact_source or None}
        return {
            "id": self.id, "kind": self.kind, "area": self.area,
            "severity": self.severity.value, "title": self.title, "details": self.details,
            "status": self.status.value, "playbook": self.playbook,
            "approval_id": self.approval_id, "statement_id": self.statement_id,
            "report_count": str(self.report_count), "opened_at": self.opened_at.isoformat(),
            "last_report_at": self.last_report_at.isoformat(),
            "updated_at": self.updated_at.isoformat(), "chosen_playbook": self.chosen_playbook,
            "source_actor": self.source_actor, "source_scope": self.source_scope,
            "source_verified": "1" if self.source_verified else "0",
            **{k: v for k, v in optional.items() if v is not None}, **self.extra,
        }

    def evolve(self, changes: dict[str, str]) -> Incident:
        """The incident once `changes` (a transition's fields) are written to its hash."""
        return Incident.from_hash({**self.to_hash(), **changes})


def ids_for(incident_id: str, version: int) -> tuple[str, str, str]:
    """(draft, approval, statement) ids of a draft version: DRF-00042-1, APR-00042-1, ..."""
    number = incident_id.removeprefix("INC-")
    return (f"DRF-{number}-{version}", f"APR-{number}-{version}", f"STM-{number}-{version}")


def incident_of_statement(statement_id: str) -> str:
    """INC-00042 for STM-00042-3: the incident whose version it is (:func:`ids_for`)."""
    return "INC-" + statement_id.removeprefix("STM-").rsplit("-", 1)[0]


def draft_version(draft_id: str) -> int:
    """3 for `DRF-00042-3`; 0 for no draft."""
    return int(draft_id.rsplit("-", 1)[1]) if draft_id else 0


def opened(incident_id: str, report: Report) -> Incident:
    """The incident a report opens, with who opened it as authenticated."""
    return Incident(
        id=incident_id, kind=report.kind, area=report.area, severity=report.severity,
        title=report.title, details=report.details, status=IncidentStatus.open,
        opened_at=report.received_at, last_report_at=report.received_at,
        updated_at=report.received_at, chosen_playbook=report.playbook or "",
        source_actor=report.actor, source_scope=report.source.scope if report.source else "",
        source_verified=report.verified, exercise=report.exercise,
        drill_list=report.drill_list or "", claim=report.claim,
    )


def _check(incident: Incident, transition: str) -> None:
    """Raise IncidentTransitionError unless `transition` may start from the status."""
    if all(incident.status != start for start, _ in TRANSITIONS[transition]):
        raise IncidentTransitionError(incident.id, incident.status.value, transition)


def attached(incident: Incident, report: Report, in_scope: bool = True) -> dict[str, str]:
    """A report joins an open incident. Only an authenticated report whose filer may act in
    the incident's area (`in_scope`) may raise the severity; any other is recorded. Who raised
    it is kept, for the exhaustion rule must trust them too. The report count is not here: it
    is incremented where it is stored."""
    _check(incident, "attached")
    raised = (report.verified and in_scope
              and report.severity.rank > incident.severity.rank)
    last = max(incident.last_report_at, report.received_at)
    return {
        "severity": (report.severity if raised else incident.severity).value,
        "last_report_at": last.isoformat(), "updated_at": report.received_at.isoformat(),
        **({"severity_scope": report.source.scope if report.source else ""} if raised else {}),
    }


def draft_failed(incident: Incident, playbook: str, error: str, now: datetime
                 ) -> dict[str, str]:
    """The planner's first draft did not render: the duty officer must act."""
    _check(incident, "draft_failed")
    return {"playbook": playbook, "status": IncidentStatus.needs_duty_officer.value,
            "status_reason": error, "updated_at": now.isoformat()}


def sent_for_approval(incident: Incident, playbook: str, draft_id: str, approval_id: str,
                      now: datetime) -> dict[str, str]:
    """A draft version (the planner's or a redraft) waits for approval `approval_id`. The
    status reason is left as it was."""
    _check(incident, "sent_for_approval")
    return {"playbook": playbook, "draft_id": draft_id, "updated_at": now.isoformat(),
            "status": IncidentStatus.awaiting_approval.value, "approval_id": approval_id}


def handed_to_duty_officer(incident: Incident, playbook: str, draft_id: str, reason: str,
                           now: datetime) -> dict[str, str]:
    """A draft version whose playbook asks no approver: the duty officer takes it on."""
    _check(incident, "handed_to_duty_officer")
    return {"playbook": playbook, "draft_id": draft_id, "updated_at": now.isoformat(),
            "status": IncidentStatus.needs_duty_officer.value, "status_reason": reason,
            "approval_id": ""}


def exhausted(incident: Incident, reason: str, now: datetime) -> dict[str, str]:
    """The approval chain ran out and its rule holds the request or hands it to the duty
    officer: the incident still awaits approval, with the reason said."""
    _check(incident, "exhausted")
    return {"status_reason": reason, "updated_at": now.isoformat()}


def approved(incident: Incident, statement_id: str, now: datetime) -> dict[str, str]:
    """The draft was approved (by decision, or by a `publish` exhaustion rule)."""
    _check(incident, "approved")
    return {"status": IncidentStatus.approved.value, "statement_id": statement_id,
            "updated_at": now.isoformat()}


def returned(incident: Incident, reason: str, now: datetime) -> dict[str, str]:
    """An approver rejected the draft: it is back with the duty officer."""
    _check(incident, "returned")
    return {"status": IncidentStatus.returned.value, "status_reason": reason,
            "updated_at": now.isoformat()}


def published(incident: Incident, statement_id: str, cancel: bool, now: datetime
              ) -> dict[str, str]:
    """The approved statement is public: `all_clear` for a Cancel, else `published`; an
    incident closed meanwhile stays closed. The statement joins the published list."""
    _check(incident, "published")
    status = (IncidentStatus.closed if incident.status == IncidentStatus.closed
              else IncidentStatus.all_clear if cancel else IncidentStatus.published)
    return {"status": status.value,
            "published": json.dumps([*(incident.published or ()), statement_id]),
            "updated_at": now.isoformat()}


def closed(incident: Incident, reason: str, now: datetime) -> dict[str, str]:
    """The duty officer closes the incident."""
    _check(incident, "closed")
    return {"status": IncidentStatus.closed.value, "status_reason": reason,
            "closed_at": now.isoformat(), "updated_at": now.isoformat()}


def merged(incident: Incident, into: Incident, now: datetime) -> dict[str, str]:
    """A duty officer merges the incident into `into` (the same rumour in another language,
    say): it is closed, pointing there; its reports count there from now on."""
    _check(incident, "closed")
    _check(into, "attached")
    return {**closed(incident, f"merged into {into.id}", now), "merged_into": into.id}
