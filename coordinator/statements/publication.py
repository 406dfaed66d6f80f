"""Hand an approved statement to the web channel and record that it was published.

SMS and email fan-out to subscribers is the subscribers issue; their seam is
:func:`web_deliveries`, which today yields the one public web delivery.
"""

from __future__ import annotations

import json
from datetime import datetime

from channels.base import Channel, OutboundMessage
from channels.delivery import send_with_retries
from coordinator.errors import BadEvent
from coordinator.events import AuditEvent, Delivery, Statement
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact


async def approved_statement(rt: Runtime, claimed: Statement) -> Statement:
    """The statement as the decider stored it with a recorded approval, never the event's own
    copy: a stray or forged message on `statements` publishes nothing (promise 1).

    Raises BadEvent when there is no such statement or its approval is not recorded."""
    stored = await rt.redis.hget(rt.keys.statement(claimed.id), "statement")
    status = await rt.redis.hget(rt.keys.approval(claimed.approval_id), "status")
    if stored is None or status != "approved":
        raise BadEvent(f"statement {claimed.id} has no recorded approval "
                       f"(approval {claimed.approval_id} is {status or 'unknown'})")
    return Statement.model_validate_json(stored)


def web_deliveries(statement: Statement, now: datetime) -> list[Delivery]:
    """The deliveries of a statement; the id is deterministic, so a replay makes none new."""
    return [Delivery(id=f"{statement.id}:web:public", statement_id=statement.id, channel="web",
                     recipient="public", language="*", status="queued", at=now)]


async def publish_statement(rt: Runtime, channels: dict[str, Channel], statement: Statement,
                            now: datetime) -> bool:
    """Send every delivery; True when this call published the statement for the first time.

    Raises DeliveryError from a channel."""
    for delivery in web_deliveries(statement, now):
        await send_with_retries(channels[delivery.channel], OutboundMessage(
            id=delivery.id, recipient=delivery.recipient, text="", statement=statement),
            attempts=5)
    key = rt.keys.statement(statement.id)
    ikey = rt.keys.incident(statement.incident_id)

    async def body(pipe: Pipeline) -> bool:
        if await pipe.hget(key, "announced"):
            return False
        incident = await pipe.hgetall(ikey)
        published = json.loads(incident.get("published") or "[]")
        status = "all_clear" if statement.msg_type == "Cancel" else "published"
        pipe.multi()
        pipe.hset(key, "announced", now.isoformat())
        pipe.hset(ikey, mapping={
            "status": "closed" if incident.get("status") == "closed" else status,
            "published": json.dumps([*published, statement.id]),
            "updated_at": now.isoformat()})
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor=rt.settings.worker_id, action="statement.published",
            interface="worker", incident_id=statement.incident_id, subject=statement.id,
            detail={"channels": ["web"], "approved_by": statement.approved_by}))
        return True

    return await transact(rt.redis, [key, ikey], body)
