"""Put an approved statement on the public pages and record that it was published.

The public page is no channel: :func:`queue_on_web` writes the statement where the web
process reads it. SMS and email to subscribers follow as deliveries (``dispatch.fanout``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from coordinator.errors import BadEvent
from coordinator.events import AuditEvent, Statement
from coordinator.model.incident import Incident, IncidentStatus, published
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact, watch_and_read
from coordinator.statements.promises import promised_after, queue_promise


async def approved_statement(rt: Runtime, claimed: Statement) -> Statement:
    """The statement as the decider stored it with a recorded approval, never the event's own
    copy: a stray or forged message on `statements` publishes nothing (promise 1).

    Raises BadEvent when there is no such statement or its approval is not recorded."""
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hget(rt.keys.statement(claimed.id), "statement")
        pipe.hget(rt.keys.approval(claimed.approval_id), "status")
        stored, status = await pipe.execute()
    if stored is None or status != "approved":
        raise BadEvent(f"statement {claimed.id} has no recorded approval "
                       f"(approval {claimed.approval_id} is {status or 'unknown'})")
    return Statement.model_validate_json(stored)


def queue_on_web(pipe: Pipeline, rt: Runtime, statement: Statement, now: datetime) -> None:
    """Inside MULTI: make the statement part of the public pages, feeds and API: stored, and
    added to the public index once (publishing it again changes nothing)."""
    key = rt.keys.statement(statement.id)
    pipe.hset(key, "statement", statement.model_dump_json())
    pipe.hsetnx(key, "published_at", now.isoformat())
    # A drill's statement is kept apart: the public list, feeds and API never show it.
    index = (rt.keys.exercises_published() if statement.exercise
             else rt.keys.statements_published())
    pipe.zadd(index, {statement.id: now.timestamp()}, nx=True)


async def publish_statement(rt: Runtime, statement: Statement, now: datetime) -> bool:
    """Put the statement on the public pages and record that it was published, in one
    transaction; True when this call published it for the first time. Raises RedisError
    (the handler retries), IncidentTransitionError when the incident is in no state to
    publish (then nothing is public)."""
    key = rt.keys.statement(statement.id)
    ikey = rt.keys.incident(statement.incident_id)
    cancel = statement.msg_type == "Cancel"

    async def body(pipe: Pipeline) -> bool:
        announced, row = await watch_and_read(pipe, [key, ikey], ("HGET", key, "announced"),
                                              ("HGETALL", ikey))
        if announced:  # published before: the pages are there
            return False
        incident = Incident.from_hash(row)
        fields = published(incident, statement.id, cancel, now)
        playbook = rt.playbooks.get(statement.playbook_id)
        # No promise after an all-clear, nor for an incident closed while its statement was
        # being approved: nobody is left to keep it.
        after = (None if cancel or playbook is None or incident.status == IncidentStatus.closed
                 else promised_after(playbook.follow_ups, len(incident.published or ()) + 1))
        due = now + timedelta(seconds=after) if after else None
        pipe.multi()
        queue_on_web(pipe, rt, statement, now)
        pipe.hset(key, "announced", now.isoformat())
        pipe.hset(ikey, mapping=fields)
        queue_promise(pipe, rt.keys, statement.incident_id, statement.id, due)
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor=rt.settings.worker_id, action="statement.published",
            interface="worker", incident_id=statement.incident_id, subject=statement.id,
            detail={"channels": ["web"], "approved_by": statement.approved_by,
                    "next_update_by": due.isoformat() if due else None}))
        return True

    return await transact(rt.redis, [], body)  # the body watches the statement and incident
