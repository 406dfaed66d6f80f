"""Handing one delivery to its channel, and the record of what came of it: shared by the
single deliveries (``dispatch.deliveries``) and a statement's batches
(``dispatch.batches``).

A delivery's state is a Redis hash (``Keys.delivery``); the statuses in :data:`FINAL` are
never sent again. Nothing is handed over to someone who said STOP, left, or whose
statement was withdrawn, nor a prompt about an approval decided since, asked again at the
moment the channel's turn comes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from coordinator.dispatch import stopping
from coordinator.events import AuditEvent, DeliveryRequest, utcnow
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from coordinator.state import Pipeline, Script, queue_audit, run_pipeline
from coordinator.subscribers.store import queue_active

FINAL = frozenset({"sent", "queued", "accepted", "delivered", "undelivered", "failed", "skipped"})
PROGRESS = {"queued": 0, "accepted": 0, "sending": 0, "sent": 1, "delivered": 2,
            "undelivered": 2, "failed": 2}


# KEYS: the deliveries; ARGV: owner (worker/instance), now, heartbeat key prefix, this
# instance, channel, then each delivery's addressee. Per delivery: its final status, `busy`
# (a live worker is sending it, or a request cut off with the provider may still land there
# until its `landing` time, Redis's clock in ms), `orphan|<started>` (a dead one was) or
# `fresh`; the last two are now this owner's.
# A delivery this very claim took (same owner, same `now`: the claim run again, as a
# pipeline is after Redis lost a script) is `fresh` again, and changes nothing.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""  # Redis's clock in ms, for the scripts that keep or read a delivery's `landing` time
_CLAIM = Script(_NOW_MS + """
local final = {sent=1, queued=1, accepted=1, delivered=1, undelivered=1, failed=1, skipped=1}
local out = {}
for i, key in ipairs(KEYS) do
  local row = redis.call('HMGET', key, 'status', 'owner', 'at', 'landing')
  local status = row[1] or ''
  local claim = 'fresh'
  if final[status] then
    claim = status
  elseif status == 'sending' and row[2] == ARGV[1] and row[3] == ARGV[2] then
    claim = 'fresh'
  elseif status == 'sending' and (tonumber(row[4] or '') or 0) > now_ms() then
    claim = 'busy'
  else
    if status == 'sending' then
      local owner = row[2] or ''
      local slash = string.find(owner, '/', 1, true) or (#owner + 1)
      local alive = redis.call('GET', ARGV[3] .. string.sub(owner, 1, slash - 1))
      local instance = string.sub(owner, slash + 1)
      if alive and alive == instance and instance ~= ARGV[4] then
        claim = 'busy'
      else
        claim = 'orphan|' .. (row[3] or '')
      end
    end
    if claim ~= 'busy' then
      redis.call('HSET', key, 'status', 'sending', 'channel', ARGV[5], 'to', ARGV[5 + i],
                 'owner', ARGV[1])
      if claim == 'fresh' then redis.call('HSET', key, 'at', ARGV[2]) end
      redis.call('HINCRBY', key, 'attempts', 1)
    end
  end
  out[i] = claim
end
return out
""")


# KEYS: deliveries; ARGV: owner (worker/instance), then per delivery `1` when it was never
# handed to a channel by anyone. Each still `sending` as this owner's gets no owner: the
# next claim reads it as a dead worker's (an orphan, looked for at the provider first), not
# as this live one's; one never handed over is as if never claimed (the next claim: fresh).
_RELEASE = Script("""
for i, key in ipairs(KEYS) do
  local row = redis.call('HMGET', key, 'status', 'owner')
  if row[1] == 'sending' and row[2] == ARGV[1] then
    if ARGV[1 + i] == '1' then
      redis.call('HDEL', key, 'status', 'owner', 'at')
    else
      redis.call('HSET', key, 'owner', '')
    end
  end
end
return 0
""")


@dataclass(frozen=True)
class Outcome:
    """What came of handing a delivery over (before it is recorded)."""

    status: str
    detail: str
    provider_id: str = ""
    error_code: str = ""
    at: datetime | None = None
    """When the channel answered; None: when the outcome is recorded (nothing was sent)."""


async def skip_reason(rt: Runtime, request: DeliveryRequest, channel: Channel | None) -> str:
    """Why the delivery must not be handed over now ("" when it may): one round trip."""
    if channel is None:
        return f"{request.channel} is not configured"
    def fill(pipe: Pipeline) -> None:
        pipe.sismember(rt.keys.opted_out("sms"), request.recipient)
        queue_active(pipe, rt.keys, [request.subscriber_id or ""])
        pipe.hexists(rt.keys.dispatch(request.statement_id or "-"), "withdrawn_at")
        pipe.hget(rt.keys.approval(request.answer_for or "-"), "status")

    opted_out, (active,), withdrawn, approval = await run_pipeline(rt.redis, fill)
    return reason_not_to_send(request, bool(opted_out), bool(active), bool(withdrawn),
                              approval)


def reason_not_to_send(request: DeliveryRequest, opted_out: bool, active: bool,
                       withdrawn: bool, approval: str | None = None) -> str:
    """Why a delivery is not wanted any more, given what Redis says ("" when it is):
    `approval`, the status of the approval a prompt is about. Pure."""
    if request.statement_id and withdrawn:
        return "statement withdrawn"
    if request.answer_for and approval not in (None, "pending"):
        return f"approval {request.answer_for} already {approval}"
    if request.channel == "sms" and opted_out:
        return "recipient opted out (STOP)"
    if request.subscriber_id and not active:
        return "subscriber is no longer active"
    return ""


async def hand_over(rt: Runtime, channel: Channel, request: DeliveryRequest, orphan: bool,
                    started: str | None,
                    wanted: Callable[[], Awaitable[bool]] | None = None,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Outcome:
    """Send through the channel with retries (waiting with `sleep` before each); a delivery
    an earlier attempt was cut off in (`orphan`, started at `started`) is first looked for
    at the provider. The channel asks `wanted` once its turn comes (by default: Redis, one
    round trip). The outcome carries the moment the channel answered: records and audit
    entries say when a message was handed over, not when the bookkeeping caught up."""
    async def asked() -> bool:
        return not await skip_reason(rt, request, channel)

    message = OutboundMessage(id=request.id, recipient=request.recipient, text=request.text,
                              subject=request.subject, html=request.html,
                              language=request.language, unsubscribe_url=request.unsubscribe_url,
                              wanted=wanted or asked)

    async def already_there() -> Receipt | None:
        return await reconcile(channel, message, started)

    try:  # an orphan's first attempt looks for it at the provider (found: handed over
        # before the crash, and recorded at its own time)
        receipt = await send_with_retries(channel, message, rt.settings.delivery_attempts,
                                          sleep=sleep, before_retry=already_there,
                                          look_first=orphan)
    except Withdrawn:
        why = await skip_reason(rt, request, channel) or "withdrawn"
        return Outcome("skipped", why, at=utcnow())
    except PermanentDeliveryError as exc:
        return Outcome("failed", str(exc), error_code=exc.code, at=utcnow())
    except DeliveryError as exc:
        return Outcome("failed", f"gave up: {exc}", at=utcnow())
    return Outcome(receipt.status, receipt.provider_id, provider_id=receipt.provider_id,
                   at=receipt.taken_at or utcnow())


async def reconcile(channel: Channel, message: OutboundMessage, started: str | None
                    ) -> Receipt | None:
    """An attempt was cut off by a crash: ask the provider before sending again. Email has
    no way to ask; its Message-ID is the delivery id, so a re-send is recognisable. Raises
    the channel's Transient/PermanentDeliveryError when the provider cannot be asked
    (``channels.delivery.send_with_retries`` then looks again on its next attempt)."""
    if not isinstance(channel, Reconciling):
        return None
    since = datetime.fromisoformat(started) if started else datetime.min.replace(tzinfo=UTC)
    return await channel.reconcile(message, since)


async def claim(rt: Runtime, requests: list[DeliveryRequest], channel: str, now: datetime
                ) -> list[str]:
    """Take deliveries for this process, in one script: each one's claim, `fresh`,
    `orphan|<when it was started>` (left `sending` by a process that is gone), `busy`
    (another live process is sending it: never taken from it, since its hand-over may still
    land) or its final status."""
    if not requests:
        return []
    return claims_of(await _CLAIM(rt.redis, *_claim_args(rt, requests, channel, now)))


async def release(rt: Runtime, requests: list[DeliveryRequest]) -> None:
    """Give claims up that this process will not finish (its handling failed after the
    claim): while it lives, no other worker would take them (`busy`); released, the next
    claim looks for each at the provider before sending it."""
    await give_back(rt, requests, [False] * len(requests))


# KEYS: deliveries; ARGV: owner (worker/instance), how long (ms) a request cut off with the
# provider may still land there. Each still `sending` as this owner's gets no owner and a
# `landing` time (Redis's clock): until then every claim of it is `busy`, then an orphan.
_LAND = Script(_NOW_MS + """
local until_ms = now_ms() + tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local row = redis.call('HMGET', key, 'status', 'owner')
  if row[1] == 'sending' and row[2] == ARGV[1] then
    redis.call('HSET', key, 'owner', '', 'landing', until_ms)
  end
end
return 0
""")


def landing_s(settings: Settings) -> float:
    """How long a request cut off with the provider (``stopping.IN_FLIGHT_GRACE_S`` into a
    rebalance or the stop) may still land there: the twilio SDK's own timeout, less the
    grace it had, after which an unanswered attempt is looked for at the provider anyway.
    Pure."""
    return max(0.0, settings.twilio_timeout_s - stopping.IN_FLIGHT_GRACE_S)


async def give_back_landing(rt: Runtime, requests: list[DeliveryRequest]) -> None:
    """:func:`release` the claims of deliveries cut off while their request was with the
    provider, each `busy` to every claim (this process's too) for :func:`landing_s` more:
    that request may still land there, and a claim that looked for it at once could miss
    it and send it twice. Then an orphan, looked for at the provider first (the recovery
    round sends it on: its batch is not marked done, its pending entry stays)."""
    if requests:
        await _LAND(rt.redis, [rt.keys.delivery(r.id) for r in requests],
                    [rt.holder,
                     int(landing_s(rt.settings) * 1000)])


async def give_back(rt: Runtime, requests: list[DeliveryRequest], untouched: list[bool]
                    ) -> None:
    """:func:`release`, where a delivery `untouched` (claimed fresh, and cut off before its
    channel's turn came: nobody ever handed it over) is as if never claimed; the next claim
    finds it fresh, and sends it without looking for it at the provider."""
    if requests:
        await _RELEASE(rt.redis, [rt.keys.delivery(r.id) for r in requests],
                       [rt.holder,
                        *("1" if u else "0" for u in untouched)])


def queue_claim(pipe: Pipeline, rt: Runtime, requests: list[DeliveryRequest], channel: str,
                now: datetime) -> None:
    """:func:`claim`, queued in a pipeline run by ``state.run_pipeline`` (its reply:
    :func:`claims_of`); `requests` not empty."""
    _CLAIM.queue(pipe, *_claim_args(rt, requests, channel, now))


def claims_of(reply: list[Any]) -> list[str]:
    """The claims in the claim script's reply. Pure."""
    return [str(c) for c in reply]


def _claim_args(rt: Runtime, requests: list[DeliveryRequest], channel: str, now: datetime
                ) -> tuple[list[str], list[Any]]:
    return [rt.keys.delivery(r.id) for r in requests], [
        rt.holder, now.isoformat(),
        rt.keys.worker_heartbeat(""), rt.instance, channel, *[addressee(r) for r in requests]]


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


def queue_outcome(pipe: Pipeline, rt: Runtime, request: DeliveryRequest, outcome: Outcome,
                  now: datetime, counts: Counter[tuple[str, str]] | None = None) -> None:
    """Inside MULTI (or a pipeline): the delivery's final record, its statement's counter
    (added to `counts`, by ledger key and column, when the caller writes many outcomes: see
    :func:`queue_counts`), its audit entry, and the end of its wait in the pending list; at
    the outcome's own moment, else `now`."""
    mine: Counter[tuple[str, str]] = Counter() if counts is None else counts
    record, event = outcome_record(rt, request, outcome, now)
    pipe.hset(rt.keys.delivery(request.id), mapping=record)
    if request.statement_id:
        count_outcome(rt, request, outcome, mine)
        if counts is None:  # else the caller writes its counts once, for all its outcomes
            queue_counts(pipe, mine)
    else:
        pipe.hdel(rt.keys.deliveries_pending(), request.id)
    queue_audit(pipe, rt.keys, event)


def outcome_record(rt: Runtime, request: DeliveryRequest, outcome: Outcome, now: datetime
                   ) -> tuple[dict[str, str], AuditEvent]:
    """A delivery's final record (the fields of its hash) and its audit entry, at the
    outcome's own moment, else `now`."""
    detail = without_contact(outcome.detail, request)
    now = outcome.at or now
    failed = outcome.status == "failed"
    return {
        "status": outcome.status, "channel": request.channel, "to": addressee(request),
        "provider_id": outcome.provider_id, "error": "" if outcome.provider_id else detail,
        "error_code": outcome.error_code, "at": now.isoformat(),
        "statement_id": request.statement_id or ""}, AuditEvent(
        at=now, actor="loa", action=f"delivery.{'failed' if failed else outcome.status}",
        interface=request.channel, subject=request.id,
        # A statement's deliveries stay out of the incident's timeline (which would grow
        # with the audience): the timeline shows the dispatch counters instead.
        incident_id=None if request.purpose == "statement" else request.incident_id,
        detail={"to": addressee(request), "purpose": request.purpose, "detail": detail,
                "incident": request.incident_id})


def count_outcome(rt: Runtime, request: DeliveryRequest, outcome: Outcome,
                  counts: Counter[tuple[str, str]]) -> None:
    """Add a statement's delivery outcome to `counts` (by ledger key and column)."""
    column = tally(outcome.status)
    ledger = rt.keys.dispatch(request.statement_id or "-")
    if outcome.provider_id and column != "sent":
        # Handed over, and found already delivered (or not) at the provider (an orphan
        # reconciled): it counts as sent too, as it would have had the callback come after
        # us.
        counts[ledger, f"{request.channel}:sent"] += 1
    counts[ledger, f"{request.channel}:{column}"] += 1


def queue_counts(pipe: Pipeline, counts: Counter[tuple[str, str]]) -> None:
    """Inside MULTI (or a pipeline): add `counts` (by ledger key and column) to the
    statements' counters, one command a column."""
    for (ledger, column), n in counts.items():
        pipe.hincrby(ledger, column, n)


def tally(status: str) -> str:
    """The progress column a status counts in. Pure."""
    return {"queued": "sent", "accepted": "sent", "sent": "sent", "delivered": "delivered",
            "undelivered": "failed", "failed": "failed", "skipped": "skipped"}.get(status,
                                                                                 status)
