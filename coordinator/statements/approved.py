"""The statement an approval makes of a draft, and its record in Redis."""

from __future__ import annotations

from datetime import datetime

from coordinator import outbox, topics
from coordinator.events import ApprovalRequest, Draft, Statement
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import Incident, approved, ids_for
from coordinator.runtime import Runtime
from coordinator.state import Pipeline


def statement_for(request: ApprovalRequest, draft: Draft, incident: dict[str, str],
                  approved_by: list[str], basis: str, at: datetime) -> Statement:
    """The statement an approval makes of a draft."""
    return Statement(
        id=ids_for(request.incident_id, draft.version)[2], incident_id=request.incident_id,
        approval_id=request.id, draft_id=draft.id, playbook_id=request.playbook_id,
        kind=incident["kind"], severity=request.severity, area=incident["area"],
        texts=draft.texts, approved_by=approved_by, approved_at=at,
        msg_type=draft.msg_type, references=draft.references,
        approval_basis=basis,  # type: ignore[arg-type]
        exercise=incident.get("exercise") == "1", drill_list=incident.get("drill_list") or None,
        fact=draft.fact, fact_source=draft.fact_source, spreading=draft.spreading,
    )


def queue_approved(pipe: Pipeline, rt: Runtime, record: ApprovalRecord, statement: Statement,
                   incident: dict[str, str], decided_by: str, now: datetime) -> None:
    """Inside MULTI: mark the request approved, store its statement, move the incident (as
    read in the same compare-and-set) to approved, and keep the statement's event until it
    is published (``outbox``)."""
    done = record.evolve(status="approved", decided_by=decided_by,
                         decided_at=statement.approved_at.isoformat(), due=None,
                         basis=statement.approval_basis)
    pipe.hset(rt.keys.approval(record.request.id), mapping=done.to_hash())
    pipe.zrem(rt.keys.approvals_pending(), record.request.id)
    pipe.hset(rt.keys.statement(statement.id), mapping={"statement": statement.model_dump_json()})
    pipe.hset(rt.keys.incident(record.request.incident_id),
              mapping=approved(Incident.from_hash(incident), statement.id, now))
    outbox.queue(pipe, rt.keys, {statement_message_id(statement.id): (
        topics.STATEMENTS.name, statement.incident_id, statement.to_bytes())})


def statement_message_id(statement_id: str) -> str:
    """The kept message (``outbox``) of a statement to publish."""
    return f"statement:{statement_id}"
