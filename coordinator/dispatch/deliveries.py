"""Hand a delivery request to its channel: once, with retries, never to someone who said STOP.

The delivery's state is a Redis hash; a request already sent (or failed for
good) is not sent again when its event is replayed. A delivery left in
`sending` by a crash is attempted again (reconciling it with the provider
first is the subscribers issue's work).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from channels.base import (
    Channel,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from channels.delivery import send_with_retries
from coordinator.events import AuditEvent, DeliveryRequest
from coordinator.keys import Keys
from coordinator.runtime import Runtime
from coordinator.state import Redis, queue_audit

FINAL = frozenset({"sent", "queued", "accepted", "delivered", "undelivered", "failed", "skipped"})


_PROGRESS = {"queued": 0, "accepted": 0, "sending": 0, "sent": 1, "delivered": 2,
             "undelivered": 2, "failed": 2}


@dataclass(frozen=True)
class Delivered:
    """What happened to one delivery request."""

    status: str
    detail: str


async def deliver(rt: Runtime, channels: dict[str, Channel], request: DeliveryRequest,
                  now: datetime) -> Delivered:
    """Send a delivery request through its channel, at most once to the provider per success."""
    key = rt.keys.delivery(request.id)
    current = await rt.redis.hget(key, "status")
    if current in FINAL:
        return Delivered(current, "already handled")
    if request.channel == "sms" and await rt.redis.sismember(rt.keys.opted_out("sms"),
                                                             request.recipient):
        return await _finish(rt, request, "skipped", "recipient opted out (STOP)", now)
    if request.subscriber_id and not await rt.redis.sismember(rt.keys.subs_active(),
                                                              request.subscriber_id):
        return await _finish(rt, request, "skipped", "subscriber is no longer active", now)
    channel = channels.get(request.channel)
    if channel is None:
        return await _finish(rt, request, "skipped", f"{request.channel} is not configured", now)
    await rt.redis.hset(key, mapping={"status": "sending", "channel": request.channel,
                                      "recipient": request.recipient, "at": now.isoformat()})
    await rt.redis.hincrby(key, "attempts", 1)
    message = OutboundMessage(id=request.id, recipient=request.recipient, text=request.text,
                              subject=request.subject, html=request.html,
                              language=request.language, unsubscribe_url=request.unsubscribe_url)
    try:
        receipt = await send_with_retries(channel, message, rt.settings.delivery_attempts)
    except PermanentDeliveryError as exc:
        return await _finish(rt, request, "failed", str(exc), now, error_code=exc.code)
    except (TransientDeliveryError, DeliveryError) as exc:
        return await _finish(rt, request, "failed", f"gave up: {exc}", now)
    await rt.redis.set(rt.keys.provider_message(receipt.provider_id), request.id)
    return await _finish(rt, request, receipt.status, receipt.provider_id, now,
                         provider_id=receipt.provider_id)


async def _finish(rt: Runtime, request: DeliveryRequest, status: str, detail: str, now: datetime,
                  provider_id: str = "", error_code: str = "") -> Delivered:
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.hset(rt.keys.delivery(request.id), mapping={
            "status": status, "channel": request.channel, "recipient": request.recipient,
            "provider_id": provider_id, "error": "" if provider_id else detail,
            "error_code": error_code, "at": now.isoformat(),
            "statement_id": request.statement_id or ""})
        if request.statement_id:
            pipe.hincrby(rt.keys.dispatch(request.statement_id),
                         f"{request.channel}:{_tally(status)}", 1)
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor="loa", action=f"delivery.{'failed' if status == 'failed' else status}",
            interface=request.channel, incident_id=request.incident_id, subject=request.id,
            detail={"to": request.recipient, "purpose": request.purpose, "detail": detail}))
        await pipe.execute()
    return Delivered(status, detail)


async def record_status(redis: Redis, keys: Keys, provider_id: str, status: str,
                        error_code: str, now: datetime) -> str | None:
    """A provider's status callback (sent, delivered, undelivered, failed): update the
    delivery it belongs to; returns the delivery id, or None for an unknown message."""
    delivery_id = await redis.get(keys.provider_message(provider_id))
    if delivery_id is None:
        return None
    current = await redis.hget(keys.delivery(delivery_id), "status")
    if _PROGRESS.get(status, 0) < _PROGRESS.get(current or "", 0):
        return str(delivery_id)  # callbacks may arrive out of order: never move backwards
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.delivery(delivery_id), mapping={
            "status": status, "error_code": error_code, "updated_at": now.isoformat()})
        row = await redis.hmget(keys.delivery(delivery_id), "statement_id", "channel")
        if row[0] and status != current and _tally(status) != _tally(current or ""):
            pipe.hincrby(keys.dispatch(row[0]), f"{row[1]}:{_tally(status)}", 1)
        await pipe.execute()
    return str(delivery_id)


def _tally(status: str) -> str:
    """The progress column a status counts in."""
    return {"queued": "sent", "accepted": "sent", "sent": "sent", "delivered": "delivered",
            "undelivered": "failed", "failed": "failed", "skipped": "skipped"}.get(status,
                                                                                 status)
