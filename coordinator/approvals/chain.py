"""Who must approve, level by level: the playbook's chain frozen into a snapshot. Pure."""

from __future__ import annotations

import hashlib

from coordinator.city import City
from coordinator.events import ChainLevelSnapshot, Severity
from coordinator.playbooks.models import Playbook


def snapshot_chain(playbook: Playbook, city: City, severity: Severity
                   ) -> list[ChainLevelSnapshot]:
    """The chain with department roles resolved to approver ids and deadlines scaled for the
    severity, as of now. Raises ValueError when the playbook has no approval section."""
    if playbook.approval is None:
        raise ValueError(f"playbook {playbook.id} has no approval chain")
    factor = playbook.approval.severity_factors.get(severity, 1.0)
    levels = []
    for index, level in enumerate(playbook.approval.chain, start=1):
        department = level.department or playbook.approval.department
        approvers = list(level.people) or [p.id for p in city.departments[department]
                                           .at_level(level.level)]
        levels.append(ChainLevelSnapshot(
            level=index, department=department, department_level=level.level,
            approvers=approvers, within_s=level.within * factor, mode=level.mode,
            reminders=sorted(level.reminders),
        ))
    return levels


def reply_code(approval_id: str) -> str:
    """A 4-digit code approvers quote when they answer by SMS (stable for a request)."""
    digest = int(hashlib.sha256(approval_id.encode()).hexdigest(), 16)
    return f"{1000 + digest % 9000}"
