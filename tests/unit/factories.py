"""Factories for the pure unit tests: approval requests and records at a fixed time `T0`,
built the same way by every module that checks approvals, timers or approver prompts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.events import ApprovalRequest, ChainLevelSnapshot, Severity
from coordinator.model.approval import ApprovalRecord

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)


def make_request(levels: list[list[str]], within_s: float = 60, on_exhausted: str = "hold",
                 severity: Severity = Severity.severe, reminders: list[float] | None = None,
                 playbook_id: str = "p") -> ApprovalRequest:
    """Request APR-00001-1 for INC-00001, made at `T0`: one chain level per list of approver
    ids (department "d"), each lasting `within_s`, with the same `reminders`."""
    chain = [ChainLevelSnapshot(level=i, department="d", department_level=i, approvers=who,
                                within_s=within_s, reminders=reminders or [])
             for i, who in enumerate(levels, start=1)]
    return ApprovalRequest(id="APR-00001-1", incident_id="INC-00001", draft_id="DRF-00001-1",
                           playbook_id=playbook_id, severity=severity, chain=chain,
                           deadline=T0 + timedelta(seconds=within_s),
                           on_exhausted=on_exhausted,  # type: ignore[arg-type]
                           created_at=T0)


def record_at(request: ApprovalRequest, level: int, due: datetime, holders: list[str],
              eligible: list[str] | None = None, **changes: object) -> ApprovalRecord:
    """The pending record of `request` at `level`, held by `holders` until `due` (eligible:
    the holders unless given); `changes` are applied on top."""
    base = ApprovalRecord(request=request, status="pending", phase="level", level=level,
                          due=due, holders=holders, eligible=eligible or holders)
    return base.evolve(**changes) if changes else base
