"""ApprovalRecord.current_level: the one way to get the chain level a request is at."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.events import ApprovalRequest, ChainLevelSnapshot, Severity
from coordinator.model.approval import ApprovalRecord

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _record(level: int) -> ApprovalRecord:
    chain = [ChainLevelSnapshot(level=i, department=f"dept-{i}", department_level=i,
                                approvers=[f"person-{i}"], within_s=600.0 * i)
             for i in (1, 2, 3)]
    request = ApprovalRequest(id="APR-1", incident_id="INC-00001", draft_id="DRF-1",
                              playbook_id="flood", severity=Severity.severe, chain=chain,
                              deadline=NOW, on_exhausted="hold")
    return ApprovalRecord(request=request, status="pending", phase="level", level=level,
                          due=NOW, holders=[f"person-{level}"], eligible=[f"person-{level}"])


def test_the_current_level_is_the_records_level_of_the_chain() -> None:
    """current_level is the chain level the record has reached, not the request's first one."""
    assert _record(1).current_level.department == "dept-1"
    moved_up = _record(3)
    assert moved_up.request.level == 1  # the request keeps the level it was made at
    assert (moved_up.current_level.level, moved_up.current_level.department,
            moved_up.current_level.within_s) == (3, "dept-3", 1800.0)
