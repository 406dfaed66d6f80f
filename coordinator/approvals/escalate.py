"""Carry out what the policy decided, as compare-and-sets on the approval request.

Each function re-reads the request, asks the pure policy, and writes in one
MULTI; a timer that fires twice, or late after a decision, finds nothing to do.
What must follow (prompts, a statement, the next timers) is returned, to be
sent only after the state is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator import observability as obs
from coordinator import outbox, topics
from coordinator.approvals.prompts import prompts_for
from coordinator.escalation.policy import (
    Escalate,
    Exhaust,
    Ignore,
    Step,
    Timer,
    hold_alert_due,
    level_timers,
    next_step,
)
from coordinator.events import ApprovalPrompt, AuditEvent, Draft, Statement
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import Incident, exhausted
from coordinator.playbooks.render import blanks
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact
from coordinator.statements.approved import queue_approved, statement_for, statement_message_id

log = obs.get_logger("escalation")


@dataclass
class Fired:
    """What a timer did, and what must follow now that it is committed."""

    action: str
    prompts: list[ApprovalPrompt] = field(default_factory=list)
    statement: Statement | None = None
    timers: list[Timer] = field(default_factory=list)
    lateness_s: float | None = None


def followup_messages(fired: Fired) -> dict[str, tuple[str, str, bytes]]:
    """What must be sent once a timer's transition is committed: id -> (topic, key, value)."""
    out = {prompt_message_id(p.id): (topics.APPROVAL_EVENTS.name, p.incident_id, p.to_bytes())
           for p in fired.prompts}
    if fired.statement is not None:
        s = fired.statement
        out[statement_message_id(s.id)] = (topics.STATEMENTS.name, s.incident_id, s.to_bytes())
    return out


def prompt_message_id(prompt_id: str) -> str:
    """The kept message (``outbox``) of a prompt to hand to its person."""
    return f"prompt:{prompt_id}"


def queue_followups(pipe: Pipeline, rt: Runtime, fired: Fired) -> Fired:
    """Inside MULTI: keep the follow-up messages in Redis with the transition, so a crash or
    a broker outage between the commit and the sends loses none (the worker drains them)."""
    outbox.queue(pipe, rt.keys, followup_messages(fired))
    return fired


async def fire_deadline(rt: Runtime, approval_id: str, level: int, now: datetime) -> Fired:
    """The deadline of `level` passed: escalate, exhaust, or nothing."""
    key = rt.keys.approval(approval_id)

    async def body(pipe: Pipeline) -> Fired:
        row = await pipe.hgetall(key)
        if not row:
            return Fired("ignored: unknown request")
        record = ApprovalRecord.from_hash(row)
        step = next_step(record, level, now, rt.city.people)
        if isinstance(step, Ignore):
            return Fired(f"ignored: {step.why}")
        draft = await pipe.get(rt.keys.draft(record.request.draft_id))
        incident = await pipe.hgetall(rt.keys.incident(record.request.incident_id))
        pipe.multi()
        return queue_followups(pipe, rt, _apply(pipe, rt, record, step, now, draft, incident))

    return await transact(rt.redis, [key], body)


def _apply(pipe: Pipeline, rt: Runtime, record: ApprovalRecord, step: Step, now: datetime,
           draft: str | None, incident: dict[str, str]) -> Fired:
    tz = rt.settings.timezone
    people = rt.city.people
    request = record.request
    audit = AuditEvent(at=now, actor="escalation", action="", interface="system",
                       incident_id=request.incident_id, subject=request.id)
    if isinstance(step, Escalate):
        entry = step.entry
        moved = record.evolve(level=entry.level, due=entry.deadline, holders=entry.holders,
                              eligible=list(dict.fromkeys([*record.eligible, *entry.holders])),
                              level_holders={**record.level_holders,
                                             entry.level: entry.holders})
        pipe.hset(rt.keys.approval(request.id), mapping=moved.to_hash())
        pipe.zadd(rt.keys.approvals_pending(), {request.id: entry.deadline.timestamp()})
        queue_audit(pipe, rt.keys, audit.model_copy(update={
            "action": "approval.escalated", "detail": {
                "from_level": record.level, "to_level": entry.level, "holders": entry.holders,
                "deadline": entry.deadline.isoformat(), "lateness_s": round(step.lateness_s, 3),
                "notes": entry.notes}}))
        prompts = (prompts_for("request", moved, entry.holders, people, now, tz)
                   + prompts_for("moved_up", moved, record.holders, people, now, tz))
        return Fired("escalated", prompts, None, level_timers(moved), step.lateness_s)
    assert isinstance(step, Exhaust)
    detail = {"rule": step.rule, "notes": step.notes, "lateness_s": round(step.lateness_s, 3),
              "level": record.level}
    officers = list(rt.city.duty_officers)
    drafted = Draft.model_validate_json(draft) if draft is not None else None
    left = blanks(drafted.texts) if drafted is not None else []
    if step.rule == "publish" and drafted is not None and not left:
        statement = statement_for(request, drafted, incident, [], "exhausted_publish", now)
        queue_approved(pipe, rt, record, statement, incident,
                       "(chain exhausted: published by rule)", now)
        queue_audit(pipe, rt.keys, audit.model_copy(update={
            "action": "approval.exhausted", "detail": {**detail, "statement": statement.id}}))
        prompts = prompts_for("decided", record, [*record.eligible, *officers], people, now, tz)
        return Fired("exhausted: published", prompts, statement, [], step.lateness_s)
    if step.rule == "duty_officer":
        signing = record.evolve(phase="duty_officer", due=None,
                                eligible=list(dict.fromkeys([*record.eligible, *officers])))
        pipe.hset(rt.keys.approval(request.id), mapping=signing.to_hash())
        pipe.zrem(rt.keys.approvals_pending(), request.id)
        _set_reason(pipe, rt, request.incident_id, incident, "approval chain exhausted: the "
                    "duty officer may sign off", now)
        queue_audit(pipe, rt.keys, audit.model_copy(update={
            "action": "approval.exhausted", "detail": detail}))
        return Fired("exhausted: duty officer may sign off",
                     prompts_for("sign_off", signing, officers, people, now, tz,
                                 base_url=rt.settings.web_url()), None, [],
                     step.lateness_s)
    if left:  # a draft with blanks is never published by rule: it is held instead
        detail["blanks"] = left
    held = record.evolve(phase="held", due=now + timedelta(seconds=request.hold_alert_every_s),
                         alerts=0)
    pipe.hset(rt.keys.approval(request.id), mapping=held.to_hash())
    pipe.zadd(rt.keys.approvals_pending(), {request.id: held.due.timestamp()})  # type: ignore[union-attr]
    _set_reason(pipe, rt, request.incident_id, incident, "approval chain exhausted: statement "
                "held until someone decides" + (" (its draft still has blanks to fill in)"
                                                if left else ""), now)
    queue_audit(pipe, rt.keys, audit.model_copy(update={
        "action": "approval.exhausted", "detail": {**detail, "rule": "hold"}}))
    return Fired("exhausted: held", prompts_for("hold_alert", held, officers, people, now, tz),
                 None, [Timer("hold", request.id, 1, held.due)], step.lateness_s)  # type: ignore[arg-type]


def _set_reason(pipe: Pipeline, rt: Runtime, incident_id: str, incident: dict[str, str],
                reason: str, now: datetime) -> None:
    pipe.hset(rt.keys.incident(incident_id),
              mapping=exhausted(Incident.from_hash(incident), reason, now))


async def fire_hold_alert(rt: Runtime, approval_id: str, number: int, now: datetime) -> Fired:
    """Alert the duty officers again about a held request, and plan the next alert."""
    key = rt.keys.approval(approval_id)

    async def body(pipe: Pipeline) -> Fired:
        row = await pipe.hgetall(key)
        record = ApprovalRecord.from_hash(row) if row else None
        if record is None or not hold_alert_due(record, number, now):
            return Fired("ignored: no hold alert due")
        nxt = now + timedelta(seconds=record.request.hold_alert_every_s)
        alerted = record.evolve(alerts=number, due=nxt)
        pipe.multi()
        pipe.hset(key, mapping=alerted.to_hash())
        pipe.zadd(rt.keys.approvals_pending(), {approval_id: nxt.timestamp()})
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor="escalation", action="approval.hold_alert", interface="system",
            incident_id=record.request.incident_id, subject=approval_id,
            detail={"alert": number, "next": nxt.isoformat()}))
        prompts = prompts_for("hold_alert", alerted, rt.city.duty_officers, rt.city.people, now,
                              rt.settings.timezone, serial=number)
        return queue_followups(pipe, rt, Fired("hold alert", prompts, None,
                                               [Timer("hold", approval_id, number + 1, nxt)]))

    return await transact(rt.redis, [key], body)


async def fire_reminder(rt: Runtime, approval_id: str, level: int, fraction: float,
                        now: datetime) -> Fired:
    """Remind the holders of `level` once, if the request is still there."""
    key = rt.keys.approval(approval_id)
    mark = rt.keys.reminder(approval_id, level, round(fraction * 100))

    async def body(pipe: Pipeline) -> Fired:
        row = await pipe.hgetall(key)
        record = ApprovalRecord.from_hash(row) if row else None
        if (record is None or record.status != "pending" or record.phase != "level"
                or record.level != level or await pipe.exists(mark)):
            return Fired("ignored: no reminder due")
        pipe.multi()
        pipe.set(mark, now.isoformat())
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor="escalation", action="approval.reminded", interface="system",
            incident_id=record.request.incident_id, subject=approval_id,
            detail={"level": level, "at_fraction": fraction, "holders": record.holders}))
        prompts = prompts_for("reminder", record, record.holders, rt.city.people, now,
                              rt.settings.timezone, serial=round(fraction * 100))
        return queue_followups(pipe, rt, Fired("reminded", prompts))

    return await transact(rt.redis, [key, mark], body)


async def overdue(rt: Runtime, now: datetime, grace_s: float) -> list[tuple[str, int, str]]:
    """(approval id, number, kind) of every pending timer overdue by more than `grace_s`:
    the safety net for a timer job lost between its submission and its commit."""
    ids = await rt.redis.zrangebyscore(rt.keys.approvals_pending(), "-inf",
                                       now.timestamp() - grace_s, start=0, num=1000)
    found = []
    for approval_id in ids:
        row = await rt.redis.hgetall(rt.keys.approval(approval_id))
        if not row:
            continue
        try:
            record = ApprovalRecord.from_hash(row)
        except (KeyError, ValueError) as exc:  # passed over: the others are still swept
            log.error("an approval request that cannot be read is overdue",
                      approval=approval_id, error=repr(exc))
            continue
        if record.phase == "level":
            found.append((approval_id, record.level, "deadline"))
        elif record.phase == "held":
            found.append((approval_id, record.alerts + 1, "hold"))
    return found
