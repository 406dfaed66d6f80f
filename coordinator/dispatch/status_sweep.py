"""The provider asked, when its status callbacks do not come.

Twilio posts a message's status changes once, and does not retry a callback that found
nobody (the web restarting, a proxy down, a network cut). Without them an SMS would stay
`queued` or `sent` in its record and in its statement's ledger for ever, and `delivered`
would undercount. So every SMS handed over waits in a sorted set (``Keys.unconfirmed``)
until its final status (delivered, undelivered, failed) comes; one still there
`LOA_STATUS_ASK_AFTER_S` after its hand-over is asked of the provider, and its answer is
applied as its callback would have been (``status_callbacks.apply_statuses``: forward
only, counted once). One not final yet is asked again less and less often
(:data:`ASK_AT_MOST_EVERY_S`), for up to :data:`GIVE_UP_AFTER_S` (a carrier that sends no
delivery report leaves a message `sent` for good); then it stays as it is, and leaves the
set.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from channels.base import StatusReport, Tracking
from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch.handover import PROGRESS, Outcome
from coordinator.dispatch.status_callbacks import ENDING, apply_statuses
from coordinator.events import DeliveryRequest
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Script

ASKED_A_ROUND = 100
"""Messages asked about in one round (each one request to the provider)."""
ASKED_AT_ONCE = 4
"""Requests to the provider at once: it shares the account's API limits with the sends."""
GIVE_UP_AFTER_S = 3 * 24 * 3600.0
"""How long after its hand-over a message's final status is still asked for."""
ASK_AT_MOST_EVERY_S = 6 * 3600.0
"""A message not final when asked is asked again once it is twice as old (15 min, 30 min,
1 h, ...), at most this long after: about 18 questions in 3 days, not 288."""

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
        pipe.zadd(rt.keys.unconfirmed(), dict.fromkeys(ids, first_ask_at(rt)))


def first_ask_at(rt: Runtime) -> float:
    """When (epoch s) to ask the provider about an SMS handed over now, should its final
    status not have come by then."""
    return time.time() + rt.settings.status_ask_after_s


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
    """Asked, and not final yet there: asked again later."""
    settled: list[str] = field(default_factory=list)
    """Final already (a callback came after all), or nothing to ask about: left the set."""
    given_up: list[str] = field(default_factory=list)
    """No final status after :data:`GIVE_UP_AFTER_S`, unknown to the provider, or with no
    hand-over time Loa can read."""
    unanswered: list[str] = field(default_factory=list)
    """The provider did not answer (an error): asked again after the interval."""
    error: str = ""
    """One of those errors."""

    def file(self, delivery_id: str, answer: StatusReport | Exception | None,
             applied: tuple[str, bool, str] | None) -> bool:
        """File an asked delivery by the provider's answer and what applying it did
        (`applied`: moved or not, and the status now; one it did not move that is at an
        ending now was settled by its callback meanwhile); True when it is to be asked
        again (not final yet)."""
        if isinstance(answer, StatusReport):
            now = (applied[2] if applied else "") or answer.status  # ('': no record)
            final = PROGRESS.get(now, 0) >= ENDING
            if applied and applied[1]:
                self.moved.append(delivery_id)
            elif final:
                self.settled.append(delivery_id)
            else:
                self.waiting.append(delivery_id)
            return not final
        if answer is not None:  # not answered: asked again after the interval
            self.unanswered.append(delivery_id)
            self.error = self.error or str(answer)
        return False

    @property
    def taken(self) -> int:
        return (len(self.moved) + len(self.waiting) + len(self.settled) + len(self.given_up)
                + len(self.unanswered))


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
        elif _age_s(at, now) > GIVE_UP_AFTER_S:
            given_up.append(delivery_id)
        else:
            ask[delivery_id] = provider_id or ""
    return ask, settled, given_up


def _age_s(at: str | None, now: datetime) -> float:
    """How long ago a record's hand-over time was (a time without a zone is UTC's; none
    Loa can read: infinitely long, so the message is given up rather than asked about for
    ever). Pure."""
    try:
        then = datetime.fromisoformat(at or "")
    except ValueError:
        return math.inf
    return (now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds()


def ask_again_in(age_s: float, after_s: float) -> float:
    """When to ask again about a message not final yet, `age_s` after its hand-over: once it
    is twice as old, at least `after_s` and at most :data:`ASK_AT_MOST_EVERY_S` later.
    Pure."""
    return min(max(age_s, after_s), ASK_AT_MOST_EVERY_S)


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
    # it out of the set; one not final yet stays, asked again once it is twice as old.
    applied = dict(zip(updates, await apply_statuses(redis, keys, list(updates.values()),
                                                     now), strict=True))
    swept = Swept(settled=settled, given_up=given_up)
    later: dict[str, float] = {}
    for delivery_id in ask:
        if swept.file(delivery_id, answers.get(delivery_id), applied.get(delivery_id)):
            later[delivery_id] = at + ask_again_in(
                _age_s(rows[delivery_id][3], now), rt.settings.status_ask_after_s)
    if later:  # XX: one whose ending came meanwhile is not put back
        await redis.zadd(keys.unconfirmed(), later, xx=True)
    return swept


async def _ask(channel: Tracking, ask: dict[str, str]
               ) -> dict[str, StatusReport | Exception | None]:
    """Each message's status at the provider (None: unknown there; an error: not answered,
    asked again next time), :data:`ASKED_AT_ONCE` requests at a time."""
    gate = asyncio.Semaphore(ASKED_AT_ONCE)

    async def one(provider_id: str) -> StatusReport | Exception | None:
        async with gate:
            try:
                return await channel.status_of(provider_id)
            except Exception as exc:  # (one SDK surprise must not sink the round)
                return exc

    found = await asyncio.gather(*(one(p) for p in ask.values()))
    return dict(zip(ask, found, strict=True))
