"""Apply an approver's decision: approve -> statement, reject -> back to the duty officer.

Who may decide: the holders of the current level and of every earlier level
(an escalated request can still be answered below), and the duty officers
once the chain is exhausted under `duty_officer`. The first valid decision
wins; any other is refused and audited. The same decision id twice returns
the first outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from channels.segments import segment_count
from coordinator import outbox, topics
from coordinator.approvals.prompts import unseen_in_sms
from coordinator.dispatch.reach import Reach
from coordinator.errors import BrokerUnavailable
from coordinator.events import (
    AuditEvent,
    Decision,
    Draft,
    RenderedText,
    Statement,
)
from coordinator.keys import Keys
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import Incident, returned
from coordinator.playbooks.render import blanks
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis, queue_audit, transact, watch_and_read
from coordinator.statements.approved import queue_approved, statement_for


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


def decision_message_id(decision_id: str) -> str:
    """The kept message (``outbox``) of a decision to apply."""
    return f"decision:{decision_id}"


async def submit_decision(redis: Redis, keys: Keys, decision: Decision,
                          send: outbox.Send) -> None:
    """Keep the decision in Redis, then put it on the broker: a broker that loses it after
    acknowledging it loses nothing (a worker sends it again); it is applied once however
    often it is sent. Raises BrokerUnavailable when the broker did not take it: then
    nothing is kept, and the caller says "not recorded"."""
    mid = decision_message_id(decision.id)
    try:
        await outbox.send_kept(redis, keys, mid, topics.DECISIONS, decision.approval_id,
                               decision.to_bytes(), send)
    except BrokerUnavailable:
        await outbox.done(redis, keys, [mid])
        raise


def refusal(record: ApprovalRecord, decision: Decision) -> str | None:
    """Why a decision may not be taken, or None when it may. Pure."""
    if record.status != "pending":
        return f"already {record.status} by {record.decided_by or '?'} at {record.decided_at}"
    if decision.approver_id not in record.eligible:
        level = record.current_level
        return (f"{decision.approver_id} may not decide {record.request.id}: it is at level "
                f"{record.level} ({level.department}), held by {', '.join(record.holders)}")
    if decision.verdict == "reject" and not decision.comment.strip():
        return "a rejection needs a reason"
    others = all_mode_waiting(record, decision.approver_id) - {decision.approver_id}
    if decision.texts and (record.approved_by or others):
        return ("an edit needs the whole approval, and others approve this draft too; "
                "approve it as it is, or ask the duty officer for a new version")
    return None


def unfilled(draft: Draft, decision: Decision) -> str | None:
    """Why an approval must wait: the texts it would publish still have blanks. Pure."""
    left = blanks((edited(draft, decision.texts) if decision.texts else draft).texts)
    if not left:
        return None
    return ("the draft still has blanks to fill in (" + "; ".join(left[:3]) + "): edit them "
            "in and approve, or ask the duty officer to set the fact (`loa incident fact`)")


def unseen(draft: Draft, decision: Decision) -> str | None:
    """Why an approval by SMS reply cannot be taken: the draft publishes what the SMS does
    not show (a translator's texts, a correction's links). Pure."""
    what = unseen_in_sms(draft)
    if decision.via != "sms" or decision.verdict != "approve" or what is None:
        return None
    return (f"{what} is approved where all of it can be read: the link in the SMS, the "
            "email link or the inbox")


async def apply_decision(rt: Runtime, decision: Decision, now: datetime) -> Outcome:
    """Record a decision once; raises KeyError for an unknown approval id."""
    akey = rt.keys.approval(decision.approval_id)
    dkey = rt.keys.decision(decision.id)

    async def body(pipe: Pipeline) -> Outcome:
        seen, row = await watch_and_read(pipe, [akey, dkey], ("GET", dkey), ("HGETALL", akey))
        if seen:
            return await _replayed(pipe, rt, json.loads(seen))
        if not row:
            raise KeyError(decision.approval_id)
        record = ApprovalRecord.from_hash(row)
        why = refusal(record, decision)
        draft_raw, incident = await watch_and_read(
            pipe, [], ("GET", rt.keys.draft(record.request.draft_id)),
            ("HGETALL", rt.keys.incident(record.request.incident_id)))
        if why is None and decision.verdict == "approve" and draft_raw:
            asked = Draft.model_validate_json(draft_raw)
            why = unfilled(asked, decision) or unseen(asked, decision)
        pipe.multi()
        audit = AuditEvent(at=decision.at, actor=decision.approver_id, interface=decision.via,
                           incident_id=record.request.incident_id, subject=decision.approval_id,
                           action="", detail={"verdict": decision.verdict, "level": record.level,
                                              "comment": decision.comment,
                                              "decision": decision.id,
                                              **({"acted_by": decision.acted_by,
                                                  "acted_because": decision.acted_because}
                                                 if decision.acted_by else {}),
                                              **({"edited": [f"{t.channel}/{t.language}"
                                                             for t in decision.texts]}
                                                 if decision.texts else {})})
        if why is not None:
            outcome = Outcome(False, f"refused: {why}")
            queue_audit(pipe, rt.keys, audit.model_copy(update={
                "action": "decision.refused", "detail": {**audit.detail, "why": why}}))
        elif decision.verdict == "reject":
            outcome = _queue_reject(pipe, rt, record, decision, incident, now)
            queue_audit(pipe, rt.keys, audit.model_copy(update={"action": "approval.rejected"}))
        else:
            draft = Draft.model_validate_json(draft_raw)
            outcome = _queue_approve(pipe, rt, record, decision, draft, incident, now,
                                     Reach.from_json(row.get("reach")))
            action = "approval.approved" if outcome.statement else "approval.partial"
            queue_audit(pipe, rt.keys, audit.model_copy(update={"action": action}))
        pipe.set(dkey, outcome.to_json())
        return outcome

    return await transact(rt.redis, [], body)  # the body watches the request and decision


async def _replayed(pipe: Pipeline, rt: Runtime, stored: dict[str, object]) -> Outcome:
    statement = None
    if stored.get("statement_id"):
        raw = await pipe.hget(rt.keys.statement(str(stored["statement_id"])), "statement")
        statement = Statement.model_validate_json(raw) if raw else None
    return Outcome(bool(stored["accepted"]), str(stored["message"]), statement)


def _queue_reject(pipe: Pipeline, rt: Runtime, record: ApprovalRecord, decision: Decision,
                  incident: dict[str, str], now: datetime) -> Outcome:
    request = record.request
    done = record.evolve(status="rejected", decided_by=decision.approver_id,
                         decided_at=decision.at.isoformat(), reason=decision.comment, due=None)
    pipe.hset(rt.keys.approval(request.id), mapping=done.to_hash())
    pipe.zrem(rt.keys.approvals_pending(), request.id)
    reason = f"rejected by {decision.approver_id}: {decision.comment}"
    pipe.hset(rt.keys.incident(request.incident_id),
              mapping=returned(Incident.from_hash(incident), reason, now))
    return Outcome(True, f"rejected; {request.incident_id} is back with the duty officer")


def all_mode_waiting(record: ApprovalRecord, approver_id: str) -> set[str]:
    """Who else must approve with `approver_id`: everyone of each `all` level they belong to
    (the current holders for the current level; for one the request has moved past, those
    who held it, delegates included, as the record keeps them; for a record that does not,
    the snapshot's people)."""
    needed: set[str] = set()
    for level in record.request.chain:
        if level.mode != "all":
            continue
        current = level.level == record.level and record.phase == "level"
        members = set(record.holders if current else
                      record.level_holders.get(level.level, level.approvers))
        if approver_id in members:
            needed |= members
    return needed


def _basis(record: ApprovalRecord, approver_id: str) -> str:
    return ("duty_officer" if record.phase == "duty_officer" and approver_id not in
            {p for lvl in record.request.chain for p in lvl.approvers} else "approver")


def needs_second_approver(reach: Reach | None, approved_by: list[str], cap: int) -> str | None:
    """Why one more approver must approve: the statement's SMS cost is above the cap and
    only one person has approved. None when it may go. Pure."""
    if reach is None or not cap or reach.sms_segments <= cap or len(approved_by) >= 2:
        return None
    return (f"it would send {reach.line()}, above the {cap:,} SMS segments one approval "
            "allows: a second approver must approve too")


def _queue_approve(pipe: Pipeline, rt: Runtime, record: ApprovalRecord, decision: Decision,
                   draft: Draft, incident: dict[str, str], now: datetime,
                   reach: Reach | None) -> Outcome:
    request = record.request
    approved_by = sorted({*record.approved_by, decision.approver_id})
    waiting = sorted(all_mode_waiting(record, decision.approver_id) - set(approved_by))
    if waiting:
        pipe.hset(rt.keys.approval(request.id), "approved_by", json.dumps(approved_by))
        return Outcome(True, f"approval noted; still waiting for {', '.join(waiting)}")
    second = needs_second_approver(reach, approved_by,
                                   rt.settings.second_approval_above_segments)
    if second:
        pipe.hset(rt.keys.approval(request.id), "approved_by", json.dumps(approved_by))
        return Outcome(True, f"approval noted; {second}")
    basis = _basis(record, decision.approver_id)
    if decision.texts:
        draft = edited(draft, decision.texts)
    statement = statement_for(request, draft, incident, approved_by, basis, decision.at)
    queue_approved(pipe, rt, record.evolve(approved_by=approved_by), statement, incident,
                   ", ".join(approved_by), now)
    return Outcome(True, f"approved; statement {statement.id} goes out", statement)


def edited(draft: Draft, texts: list[RenderedText]) -> Draft:
    """The draft with an approver's wording in place of its own, text by text (matched on
    channel and language; texts the draft does not have are ignored)."""
    by_slot = {(t.channel, t.language): t for t in texts}
    merged = []
    for t in draft.texts:
        new = by_slot.get((t.channel, t.language))
        if new is None:
            merged.append(t)
        else:
            merged.append(t.model_copy(update={
                "title": new.title if t.channel != "sms" else "", "body": new.body,
                "segments": segment_count(new.body) if t.channel == "sms" else None}))
    return draft.model_copy(update={"texts": merged})


