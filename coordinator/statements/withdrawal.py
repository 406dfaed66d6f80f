"""Withdraw a statement sent in error (the false-alarm case): its deliveries not handed over
yet stop, it leaves the public list and feeds, and its page says it was withdrawn.

One Redis transaction, so every worker sees it at its next hand-over: each delivery asks
whether its statement was withdrawn right before it goes to the provider
(``dispatch.handover``), and the fan-out stops cutting batches. What was already handed over
cannot be called back; a correction (a new version of the incident's statement) can follow
at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from coordinator.events import AuditEvent, Interface, Statement
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, queue_audit, transact
from coordinator.statements.public_events import queue_public_event


@dataclass(frozen=True)
class Withdrawal:
    """What became of a request to withdraw."""

    done: bool
    message: str
    incident_id: str = ""


async def withdraw_statement(redis: Redis, keys: Keys, statement_id: str, actor: str,
                             reason: str, via: Interface, now: datetime) -> Withdrawal:
    """Withdraw a published statement, once; audited with who, why and through what."""
    if not reason.strip():
        return Withdrawal(False, "reason: say why the statement is withdrawn")
    key = keys.statement(statement_id)

    async def body(pipe: Pipeline) -> Withdrawal:
        row = await pipe.hgetall(key)
        if not row or not row.get("published_at"):
            return Withdrawal(False, f"no published statement {statement_id}")
        if row.get("withdrawn_at"):
            incident = Statement.model_validate_json(row["statement"]).incident_id
            return Withdrawal(False, f"{statement_id} was already withdrawn at "
                                     f"{row['withdrawn_at'][:19]} by {row.get('withdrawn_by')}",
                              incident)
        statement = Statement.model_validate_json(row["statement"])
        dispatch = await pipe.hgetall(keys.dispatch(statement_id))
        pipe.multi()
        pipe.hset(key, mapping={"withdrawn_at": now.isoformat(), "withdrawn_by": actor,
                                "withdrawn_reason": reason.strip()})
        pipe.hsetnx(keys.dispatch(statement_id), "withdrawn_at", now.isoformat())
        pipe.zrem(keys.statements_published(), statement_id)
        pipe.zrem(keys.exercises_published(), statement_id)
        queue_public_event(pipe, keys, "withdrawn", statement_id)
        queue_audit(pipe, keys, AuditEvent(
            at=now, actor=actor, action="statement.withdrawn", interface=via,
            incident_id=statement.incident_id, subject=statement_id,
            detail={"reason": reason.strip(), "dispatch_so_far": dispatch}))
        return Withdrawal(True, f"{statement_id} withdrawn: nothing more of it is handed over; "
                                "publish a correction as a new version of "
                                f"{statement.incident_id}", statement.incident_id)

    return await transact(redis, [key], body)
