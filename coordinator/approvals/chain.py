"""Who must approve, level by level: the playbook's chain frozen into a snapshot. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from coordinator.city import City
from coordinator.events import ChainLevelSnapshot
from coordinator.playbooks.models import Playbook


def snapshot_chain(playbook: Playbook, city: City) -> list[ChainLevelSnapshot]:
    """The chain with department roles resolved to approver ids, as of now.

    Raises ValueError when the playbook has no approval section."""
    if playbook.approval is None:
        raise ValueError(f"playbook {playbook.id} has no approval chain")
    levels = []
    for index, level in enumerate(playbook.approval.chain, start=1):
        department = level.department or playbook.approval.department
        approvers = list(level.people) or [p.id for p in city.departments[department]
                                           .at_level(level.level)]
        levels.append(ChainLevelSnapshot(
            level=index, department=department, department_level=level.level,
            approvers=approvers, within_s=level.within, mode=level.mode,
        ))
    return levels


def first_deadline(chain: list[ChainLevelSnapshot], created_at: datetime) -> datetime:
    """When the first level's time is up."""
    return created_at + timedelta(seconds=chain[0].within_s)
