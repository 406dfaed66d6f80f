"""The provider asked, when its status callbacks do not come.

Twilio posts a message's status changes once, and does not retry a callback that found
nobody (the web restarting, a proxy down, a network cut). Without them an SMS would stay
`queued` or `sent` in its record and in its statement's ledger for ever, and `delivered`
would undercount. So every SMS handed over waits in a sorted set (``Keys.unconfirmed``)
until its final status (delivered, undelivered, failed) comes; one still there
`LOA_STATUS_ASK_AFTER_S` after its hand-over is asked of the provider, and its answer is
applied as its callback would have been (``status_callbacks.record_statuses``: forward
only, counted once). One not final yet is asked again as often, for up to
:data:`GIVE_UP_AFTER_S` (a carrier that sends no delivery report leaves a message `sent`
for good); then it stays as it is, and leaves the set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from channels.base import DeliveryError, StatusReport, Tracking
from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch.handover import PROGRESS, Outcome
from coordinator.dispatch.status_callbacks import ENDING, record_statuses
from coordinator.events import DeliveryRequest
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Script

ASKED_A_ROUND = 100
"""Messages asked about in one round (each one request to the provider)."""
ASKED_AT_ONCE = 4
"""Requests to the provider at once: it shares the account's API limits with the sends."""
GIVE_UP_AFTER_S = 3 * 24 * 3600.0
"""How long after its hand-over a message's final status is still asked for."""

# KEYS[1]: the set (Keys.unconfirmed). ARGV: now, how many at most, when to ask again. The
# members due, each moved to the next time to ask: two workers sweeping at once take
# different ones, and one taken by a worker that dies is asked again later.
_TAKE_DUE = Script("""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id) end
return due
""")


def queue_unconfirmed(pipe: Pipeline, rt: Runtime,
                      outcomes: Iterable[tuple[DeliveryRequest, Outcome]]) -> None:
    """Inside MULTI, with the deliveries' records: the SMS among them the provider took and
    has no final status for yet wait for it; asked of the provider
    `LOA_STATUS_ASK_AFTER_S` from now unless their callbacks come first."""
    ids = [r.id for r, o in outcomes if unconfirmed(r.channel, o.status, o.provider_id)]
    if ids:
        ask_at = time.time() + rt.settings.status_ask_after_s
        pipe.zadd(rt.keys.unconfirmed(), dict.fromkeys(ids, ask_at))


def unconfirmed(channel: str, status: str, provider_id: str) -> bool:
    """Whether a delivery's outcome waits for a final status from the provider: an SMS it
    took, and not at an ending yet. Pure."""
    return channel == "sms" and bool(provider_id) and PROGRESS.get(status, 0) < ENDING


@dataclass
class Swept:
    """What a round came to (delivery ids)."""

    moved: list[str] = field(default_factory=list)
    """Asked, and further on at the provider: applied as a callback."""
    waiting: list[str] = field(default_factory=list)
    """Asked, and not final yet there (or not answered): asked again later."""
    settled: list[str] = field(default_factory=list)
    """Final already (a callback came after all), or nothing to ask about: left the set."""
    given_up: list[str] = field(default_factory=list)
    """No final status after :data:`GIVE_UP_AFTER_S`, or unknown to the provider."""

    @property
    def taken(self) -> int:
        return len(self.moved) + len(self.waiting) + len(self.settled) + len(self.given_up)


def sort_due(rows: dict[str, list[str | None]], now: datetime) -> tuple[
        dict[str, str], list[str], list[str]]:
    """The due deliveries (id -> its record's status, provider id, channel and hand-over
    time) sorted: those to ask about (id -> provider id), those final or with nothing to
    ask about (no record, no provider id, not SMS), and those handed over too long ago to
    wait for any more. Pure."""
    ask: dict[str, str] = {}
    settled: list[str] = []
    given_up: list[str] = []
    for delivery_id, (status, provider_id, channel, at) in rows.items():
        if not unconfirmed(channel or "", status or "", provider_id or ""):
            settled.append(delivery_id)
        elif at and (now - datetime.fromisoformat(at)).total_seconds() > GIVE_UP_AFTER_S:
            given_up.append(delivery_id)
        else:
            ask[delivery_id] = provider_id or ""
    return ask, settled, given_up


async def sweep_statuses(rt: Runtime, channel: Tracking, now: datetime,
                         most: int = ASKED_A_ROUND) -> Swept:
    """One round: take the SMS due (at most `most`), ask the provider for those still
    without a final status, and apply what it says."""
    keys, redis = rt.keys, rt.redis
    at = now.timestamp()
    due = [str(d) for d in await _TAKE_DUE(
        redis, [keys.unconfirmed()], [at, most, at + rt.settings.status_ask_after_s])]
    if not due:
        return Swept()
    async with redis.pipeline(transaction=False) as pipe:
        for delivery_id in due:
            pipe.hmget(keys.delivery(delivery_id), ["status", "provider_id", "channel", "at"])
        rows = dict(zip(due, await pipe.execute(), strict=True))
    ask, settled, given_up = sort_due(rows, now)
    answers = await _ask(channel, ask)
    given_up += [d for d, answer in answers.items() if answer is None]
    if settled or given_up:
        await redis.zrem(keys.unconfirmed(), *settled, *given_up)
    updates = {d: StatusUpdate(ask[d], a.status, a.error_code)
               for d, a in answers.items() if isinstance(a, StatusReport)}
    # The callback script moves each forward only, counts it once, and at an ending takes
    # it out of the set; one not final yet stays, due again later.
    await record_statuses(redis, keys, list(updates.values()), now)
    swept = Swept(settled=settled, given_up=given_up)
    for delivery_id in ask:
        answer = answers.get(delivery_id)
        if isinstance(answer, StatusReport) and \
                PROGRESS.get(answer.status, 0) > PROGRESS.get(rows[delivery_id][0] or "", 0):
            swept.moved.append(delivery_id)
        elif delivery_id not in given_up:
            swept.waiting.append(delivery_id)
    return swept


async def _ask(channel: Tracking, ask: dict[str, str]
               ) -> dict[str, StatusReport | DeliveryError | None]:
    """Each message's status at the provider (None: unknown there; an error: not answered,
    asked again next time), :data:`ASKED_AT_ONCE` requests at a time."""
    gate = asyncio.Semaphore(ASKED_AT_ONCE)

    async def one(provider_id: str) -> StatusReport | DeliveryError | None:
        async with gate:
            try:
                return await channel.status_of(provider_id)
            except DeliveryError as exc:
                return exc

    found = await asyncio.gather(*(one(p) for p in ask.values()))
    return dict(zip(ask, found, strict=True))
