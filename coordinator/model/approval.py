"""The stored state of an approval request (one Redis hash), read and written as one value."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from coordinator.events import ApprovalRequest, ChainLevelSnapshot

Status = Literal["pending", "approved", "rejected", "superseded", "withdrawn"]
Phase = Literal["level", "held", "duty_officer"]


@dataclass(frozen=True)
class ApprovalRecord:
    """Where a request stands: who holds it, until when, and who may decide."""

    request: ApprovalRequest
    status: Status
    phase: Phase
    level: int
    due: datetime | None  # the current level's deadline, or the next hold alert
    holders: list[str]
    eligible: list[str]
    approved_by: list[str] = field(default_factory=list)
    decided_by: str = ""
    decided_at: str = ""
    reason: str = ""
    basis: str = ""
    alerts: int = 0
    level_holders: dict[int, list[str]] = field(default_factory=dict)
    """Who held each level the request entered, by level: an `all` level the request has
    moved past needs every one of them, the delegates who stood in for the away included
    (a record written before this field names none: its chain's approvers stand)."""

    @classmethod
    def from_hash(cls, row: dict[str, str]) -> ApprovalRecord:
        """Decode the Redis hash; raises KeyError/ValueError on a corrupt row."""
        return cls(
            request=ApprovalRequest.model_validate_json(row["request"]),
            status=row["status"],  # type: ignore[arg-type]
            phase=row.get("phase", "level"),  # type: ignore[arg-type]
            level=int(row["level"]),
            due=datetime.fromisoformat(row["due"]) if row.get("due") else None,
            holders=json.loads(row.get("holders", "[]")),
            eligible=json.loads(row.get("eligible", "[]")),
            approved_by=json.loads(row.get("approved_by", "[]")),
            decided_by=row.get("decided_by", ""),
            decided_at=row.get("decided_at", ""),
            reason=row.get("reason", ""),
            basis=row.get("basis", ""),
            alerts=int(row.get("alerts", 0)),
            level_holders={int(level): people for level, people in
                           json.loads(row.get("level_holders", "{}")).items()},
        )

    def to_hash(self) -> dict[str, str]:
        """The Redis hash fields."""
        return {
            "request": self.request.model_dump_json(), "status": self.status,
            "phase": self.phase, "level": str(self.level),
            "due": self.due.isoformat() if self.due else "",
            "holders": json.dumps(self.holders), "eligible": json.dumps(self.eligible),
            "approved_by": json.dumps(self.approved_by), "decided_by": self.decided_by,
            "decided_at": self.decided_at, "reason": self.reason, "basis": self.basis,
            "alerts": str(self.alerts),
            "level_holders": json.dumps({str(k): v for k, v in self.level_holders.items()}),
        }

    @property
    def current_level(self) -> ChainLevelSnapshot:
        """The chain level the request is at now (`level` counts from 1)."""
        return self.request.chain[self.level - 1]

    def evolve(self, **changes: object) -> ApprovalRecord:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
