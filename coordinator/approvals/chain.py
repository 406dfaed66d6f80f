"""Who must approve, level by level: the playbook's chain frozen into a snapshot. Pure."""

from __future__ import annotations

import hashlib
import hmac

from coordinator.city import City
from coordinator.errors import PlaybookError
from coordinator.events import ChainLevelSnapshot, Severity
from coordinator.playbooks.models import Playbook


def snapshot_chain(playbook: Playbook, city: City, severity: Severity
                   ) -> list[ChainLevelSnapshot]:
    """The chain with department roles resolved to approver ids and deadlines scaled for the
    severity, as of now. Raises PlaybookError when the playbook has no approval section."""
    if playbook.approval is None:
        raise PlaybookError([f"playbook {playbook.id} has no approval chain"])
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


def reply_code(key: bytes, approval_id: str, person_id: str) -> str:
    """The 6-digit code `person_id` quotes to answer `approval_id` by SMS. Pure.

    Keyed (HMAC-SHA256 with the `reply-code` key), so nobody without the key can compute
    it; one per (request, person), so one approver's code is worthless to another; stable,
    so a resent prompt carries the same code; a new draft version is a new request, hence
    new codes. Nothing is stored: the code is recomputed to check an answer."""
    digest = hmac.new(key, f"{approval_id}:{person_id}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


def code_matches(key: bytes, approval_id: str, person_id: str, given: str) -> bool:
    """Whether `given` is `person_id`'s code for `approval_id` (constant-time compare). Pure."""
    return hmac.compare_digest(reply_code(key, approval_id, person_id).encode(),
                               given.strip().encode())
