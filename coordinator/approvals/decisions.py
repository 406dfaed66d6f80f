"""Apply an approver's decision: approve -> statement, reject -> back to the duty officer.

The first valid decision wins; a decision from someone not at the request's
current level, or after the request was decided, is refused and audited.
Deciding the same decision id twice returns the first outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from coordinator.approvals.request import ids_for
from coordinator.events import ApprovalRequest, AuditEvent, Decision, Draft, Statement
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact


@dataclass(frozen=True)
class Outcome:
    """What became of a decision."""

    accepted: bool
    message: str
    statement: Statement | None = None

    def to_json(self) -> str:
        """Stored under the decision's key, so the CLI can show it."""
        return json.dumps({"accepted": self.accepted, "message": self.message,
                           "statement_id": self.statement.id if self.statement else None})


def refusal(request: ApprovalRequest, state: dict[str, str], decision: Decision) -> str | None:
    """Why a decision may not be taken, or None when it may. Pure."""
    if state["status"] != "pending":
        return (f"already {state['status']} by {state.get('decided_by', '?')} at "
                f"{state.get('decided_at', '?')}")
    level = request.chain[int(state["level"]) - 1]
    if decision.approver_id not in level.approvers:
        return (f"{decision.approver_id} is not an approver at level {level.level} "
                f"({level.department}: {', '.join(level.approvers)})")
    if decision.verdict == "reject" and not decision.comment.strip():
        return "a rejection needs a reason"
    return None


async def apply_decision(rt: Runtime, decision: Decision, now: datetime) -> Outcome:
    """Record a decision once; raises KeyError for an unknown approval id."""
    akey = rt.keys.approval(decision.approval_id)
    dkey = rt.keys.decision(decision.id)

    async def body(pipe: Pipeline) -> Outcome:
        seen = await pipe.get(dkey)
        if seen:
            return await _replayed(pipe, rt, json.loads(seen))
        state = await pipe.hgetall(akey)
        if not state:
            raise KeyError(decision.approval_id)
        request = ApprovalRequest.model_validate_json(state["request"])
        why = refusal(request, state, decision)
        pipe.multi()
        audit = AuditEvent(at=decision.at, actor=decision.approver_id, interface=decision.via,
                           incident_id=request.incident_id, subject=decision.approval_id,
                           action="", detail={"verdict": decision.verdict,
                                              "comment": decision.comment, "decision": decision.id})
        if why is not None:
            outcome = Outcome(False, f"refused: {why}")
            queue_audit(pipe, rt.keys, audit.model_copy(update={
                "action": "decision.refused", "detail": {**audit.detail, "why": why}}))
        elif decision.verdict == "reject":
            outcome = _queue_reject(pipe, rt, request, decision, now)
            queue_audit(pipe, rt.keys, audit.model_copy(update={"action": "approval.rejected"}))
        else:
            outcome = await _queue_approve(pipe, rt, request, state, decision, now)
            action = "approval.approved" if outcome.statement else "approval.partial"
            queue_audit(pipe, rt.keys, audit.model_copy(update={"action": action}))
        pipe.set(dkey, outcome.to_json())
        return outcome

    return await transact(rt.redis, [akey, dkey], body)


async def _replayed(pipe: Pipeline, rt: Runtime, stored: dict[str, object]) -> Outcome:
    statement = None
    if stored.get("statement_id"):
        raw = await pipe.hget(rt.keys.statement(str(stored["statement_id"])), "statement")
        statement = Statement.model_validate_json(raw) if raw else None
    return Outcome(bool(stored["accepted"]), str(stored["message"]), statement)


def _queue_reject(pipe: Pipeline, rt: Runtime, request: ApprovalRequest, decision: Decision,
                  now: datetime) -> Outcome:
    pipe.hset(rt.keys.approval(request.id), mapping={
        "status": "rejected", "decided_by": decision.approver_id,
        "decided_at": decision.at.isoformat(), "reason": decision.comment})
    pipe.zrem(rt.keys.approvals_pending(), request.id)
    pipe.hset(rt.keys.incident(request.incident_id), mapping={
        "status": "returned", "status_reason": f"rejected by {decision.approver_id}: "
        f"{decision.comment}", "updated_at": now.isoformat()})
    return Outcome(True, f"rejected; {request.incident_id} is back with the duty officer")


async def _queue_approve(pipe: Pipeline, rt: Runtime, request: ApprovalRequest,
                         state: dict[str, str], decision: Decision, now: datetime) -> Outcome:
    level = request.chain[int(state["level"]) - 1]
    approved_by = sorted({*json.loads(state.get("approved_by", "[]")), decision.approver_id})
    if level.mode == "all" and set(approved_by) != set(level.approvers):
        pipe.hset(rt.keys.approval(request.id), "approved_by", json.dumps(approved_by))
        waiting = sorted(set(level.approvers) - set(approved_by))
        return Outcome(True, f"approval noted; still waiting for {', '.join(waiting)}")
    draft_raw = await rt.redis.get(rt.keys.draft(request.draft_id))
    if draft_raw is None:
        raise KeyError(request.draft_id)
    draft = Draft.model_validate_json(draft_raw)
    incident = await rt.redis.hgetall(rt.keys.incident(request.incident_id))
    statement = Statement(
        id=ids_for(request.incident_id, draft.version)[2], incident_id=request.incident_id,
        approval_id=request.id, draft_id=draft.id, playbook_id=request.playbook_id,
        kind=incident["kind"], severity=request.severity, area=incident["area"],
        texts=draft.texts, approved_by=approved_by, approved_at=decision.at,
    )
    pipe.hset(rt.keys.approval(request.id), mapping={
        "status": "approved", "decided_by": ", ".join(approved_by),
        "decided_at": decision.at.isoformat(), "approved_by": json.dumps(approved_by)})
    pipe.zrem(rt.keys.approvals_pending(), request.id)
    pipe.hset(rt.keys.statement(statement.id), mapping={"statement": statement.model_dump_json()})
    pipe.hset(rt.keys.incident(request.incident_id), mapping={
        "status": "approved", "statement_id": statement.id, "updated_at": now.isoformat()})
    return Outcome(True, f"approved; statement {statement.id} goes out", statement)
