"""Hand a delivery request to its channel: once, with retries, never to someone who said STOP.

The delivery's state is a Redis hash; a request already sent (or failed for
good) is not sent again when its event is replayed. A delivery left in
`sending` by a crash is attempted again, once the provider has been asked
whether the cut-off attempt got through (`_reconcile`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from channels.base import (
    Channel,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    Reconciling,
    Withdrawn,
)
from channels.delivery import send_with_retries
from coordinator.dispatch.provider_ids import remember_early_callback, remember_provider_id
from coordinator.events import AuditEvent, DeliveryRequest
from coordinator.keys import Keys
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis, queue_audit, transact

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
    claim = await _claim_patiently(rt, key, request, now)
    if claim in FINAL:
        return Delivered(claim, "already handled")
    channel = channels.get(request.channel)
    skip = await _skip_reason(rt, request, channel)
    if skip:
        return await _finish(rt, request, "skipped", skip, now)
    assert channel is not None
    async def wanted() -> bool:  # asked again once the channel's turn comes
        return not await _skip_reason(rt, request, channel)

    message = OutboundMessage(id=request.id, recipient=request.recipient, text=request.text,
                              subject=request.subject, html=request.html,
                              language=request.language, unsubscribe_url=request.unsubscribe_url,
                              wanted=wanted)
    if claim == "orphan":  # a previous attempt died mid-send: ask the provider first
        found = await _reconcile(rt, channel, message, key)
        if found is not None:
            return await _sent(rt, request, found, now)

    async def already_there() -> Receipt | None:
        return await _reconcile(rt, channel, message, key)

    try:
        receipt = await send_with_retries(channel, message, rt.settings.delivery_attempts,
                                          before_retry=already_there)
    except Withdrawn:
        return await _finish(rt, request, "skipped", await _skip_reason(rt, request, channel)
                             or "withdrawn", now)
    except PermanentDeliveryError as exc:
        return await _finish(rt, request, "failed", str(exc), now, error_code=exc.code)
    except DeliveryError as exc:
        return await _finish(rt, request, "failed", f"gave up: {exc}", now)
    return await _sent(rt, request, receipt, now)


async def _claim_patiently(rt: Runtime, key: str, request: DeliveryRequest, now: datetime
                           ) -> str:
    """Claim; while another live process is sending it, wait for its outcome (a rebalance
    hands the same event to two consumers); after 30 s, take it over."""
    claim = await _claim(rt, key, request, now)
    for _ in range(30):
        if claim != "busy":
            return claim
        await asyncio.sleep(1.0)
        claim = await _claim(rt, key, request, now)
    return await _claim(rt, key, request, now, take_over=True)


async def _claim(rt: Runtime, key: str, request: DeliveryRequest, now: datetime,
                 take_over: bool = False) -> str:
    """Take the delivery for this process: `fresh`, `orphan` (left `sending` by a process
    that is gone), `busy` (another live process is sending it) or its final status."""

    async def body(pipe: Pipeline) -> str:
        row = await pipe.hgetall(key)
        status = row.get("status", "")
        if status in FINAL:
            return str(status)
        claim = "fresh"
        if status == "sending":
            owner_worker, _, owner_instance = row.get("owner", "").partition("/")
            alive = await pipe.get(rt.keys.worker_heartbeat(owner_worker))
            if alive == owner_instance and owner_instance != rt.instance and not take_over:
                return "busy"
            claim = "orphan"
        pipe.multi()
        fields = {"status": "sending", "channel": request.channel,
                  "to": addressee(request),
                  "owner": f"{rt.settings.worker_id}/{rt.instance}"}
        if claim == "fresh":  # an orphan keeps its first start: reconciling looks from there
            fields["at"] = now.isoformat()
        pipe.hset(key, mapping=fields)
        pipe.hincrby(key, "attempts", 1)
        return claim

    return await transact(rt.redis, [key], body)


async def _skip_reason(rt: Runtime, request: DeliveryRequest, channel: Channel | None) -> str:
    if request.channel == "sms" and await rt.redis.sismember(rt.keys.opted_out("sms"),
                                                             request.recipient):
        return "recipient opted out (STOP)"
    if request.subscriber_id and not await rt.redis.sismember(rt.keys.subs_active(),
                                                              request.subscriber_id):
        return "subscriber is no longer active"
    if channel is None:
        return f"{request.channel} is not configured"
    return ""


async def _sent(rt: Runtime, request: DeliveryRequest, receipt: Receipt, now: datetime
                ) -> Delivered:
    early = await remember_provider_id(rt.redis, rt.keys, receipt.provider_id, request.id)
    status = receipt.status
    if early and _PROGRESS.get(early, 0) > _PROGRESS.get(status, 0):
        status = early  # the provider's callback outran our own bookkeeping
    return await _finish(rt, request, status, receipt.provider_id, now,
                         provider_id=receipt.provider_id)


async def _reconcile(rt: Runtime, channel: Channel, message: OutboundMessage, key: str
                     ) -> Receipt | None:
    """An attempt was cut off by a crash: ask the provider before sending again. Email has
    no way to ask; its Message-ID is the delivery id, so a re-send is recognisable."""
    if not isinstance(channel, Reconciling):
        return None
    started = await rt.redis.hget(key, "at")
    since = datetime.fromisoformat(started) if started else datetime.min.replace(tzinfo=UTC)
    try:
        return await channel.reconcile(message, since)
    except DeliveryError:
        return None


def addressee(request: DeliveryRequest) -> str:
    """Who a delivery is for, by id and never by contact (promise 8): the subscriber, the
    person of config/, or for a confirmation code the delivery itself."""
    if request.subscriber_id:
        return request.subscriber_id
    if request.person_id:
        return f"person:{request.person_id}"
    return f"{request.purpose}:{request.id}"


def without_contact(detail: str, request: DeliveryRequest) -> str:
    """A provider's words with the recipient's address replaced by who it is (SMTP and
    Twilio errors quote the address; promise 8 keeps it out of records and timelines)."""
    for contact in {request.recipient, request.recipient.lower()} - {""}:
        detail = detail.replace(contact, addressee(request))
    return detail


async def _finish(rt: Runtime, request: DeliveryRequest, status: str, detail: str, now: datetime,
                  provider_id: str = "", error_code: str = "") -> Delivered:
    detail = without_contact(detail, request)
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.hset(rt.keys.delivery(request.id), mapping={
            "status": status, "channel": request.channel, "to": addressee(request),
            "provider_id": provider_id, "error": "" if provider_id else detail,
            "error_code": error_code, "at": now.isoformat(),
            "statement_id": request.statement_id or ""})
        if request.statement_id:
            pipe.hincrby(rt.keys.dispatch(request.statement_id),
                         f"{request.channel}:{_tally(status)}", 1)
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor="loa", action=f"delivery.{'failed' if status == 'failed' else status}",
            interface=request.channel, subject=request.id,
            # A statement's deliveries stay out of the incident's timeline (which would grow
            # with the audience): the timeline shows the dispatch counters instead.
            incident_id=None if request.purpose == "statement" else request.incident_id,
            detail={"to": addressee(request), "purpose": request.purpose, "detail": detail,
                    "incident": request.incident_id}))
        await pipe.execute()
    return Delivered(status, detail)


async def record_status(redis: Redis, keys: Keys, provider_id: str, status: str,
                        error_code: str, now: datetime) -> str | None:
    """A provider's status callback (sent, delivered, undelivered, failed): move the delivery
    forward (never back: callbacks may come out of order) and count it; returns the delivery
    id, or None for a message we have not recorded yet (kept until we do, for a week)."""
    delivery_id = await redis.get(keys.provider_message(provider_id))
    if delivery_id is None:
        await remember_early_callback(redis, keys, provider_id, status)
        return None
    key = keys.delivery(delivery_id)

    async def body(pipe: Pipeline) -> None:
        row = await pipe.hgetall(key)
        current = row.get("status", "")
        if _PROGRESS.get(status, 0) < _PROGRESS.get(current, 0) or status == current:
            return
        pipe.multi()
        pipe.hset(key, mapping={"status": status, "error_code": error_code,
                                "updated_at": now.isoformat()})
        if row.get("statement_id") and _tally(status) != _tally(current):
            pipe.hincrby(keys.dispatch(row["statement_id"]), f"{row['channel']}:{_tally(status)}",
                         1)

    await transact(redis, [key], body)
    return str(delivery_id)


def _tally(status: str) -> str:
    """The progress column a status counts in."""
    return {"queued": "sent", "accepted": "sent", "sent": "sent", "delivered": "delivered",
            "undelivered": "failed", "failed": "failed", "skipped": "skipped"}.get(status,
                                                                                 status)
