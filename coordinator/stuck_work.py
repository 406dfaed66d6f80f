"""Work Loa accepted and has not finished, with its age: what `loa doctor` reports.

Read from Redis, the record: fan-outs not finished (and how long since they last moved),
single deliveries not finished (approval prompts, codes), messages kept for a consumer
(``outbox``), reports accepted but not taken in, dead letters nobody has looked at, audit
entries not sealed into the chain, and SMS whose final status is overdue at the provider's
status sweep.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime

from coordinator import outbox
from coordinator.dispatch.ledger import open_fan_outs, read_ledger
from coordinator.keys import Keys
from coordinator.state import Redis

UNSEALED_GRACE_S = 2.0
UNSEALED_COUNTED = 10_000
STATUS_GRACE_S = 60.0


@dataclass(frozen=True)
class Stuck:
    """One kind of unfinished work: how many, how long the oldest has waited (seconds),
    and what to say about it."""

    kind: str
    count: int
    oldest_s: float
    detail: str = ""

    def line(self) -> str:
        """In plain words. Pure."""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind}: {self.count}, the oldest waiting {_age(self.oldest_s)}{extra}"


async def stuck_work(redis: Redis, keys: Keys, now: float | None = None) -> list[Stuck]:
    """Every kind of unfinished work there is some of (an empty list: all is done)."""
    now = time.time() if now is None else now
    found = [await _fan_outs(redis, keys, now), await _deliveries(redis, keys, now),
             await _kept(redis, keys), await _reports(redis, keys, now),
             await _dead_letters(redis, keys, now), await _unsealed(redis, keys, now),
             await _statuses_not_asked(redis, keys, now)]
    return [s for s in found if s is not None]


async def _fan_outs(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """Fan-outs not finished; their age is the time since they last moved."""
    open_ = await open_fan_outs(redis, keys)
    if not open_:
        return None
    ledgers = [await read_ledger(redis, keys, sid) for sid, _ in open_]
    still = max(ledgers, key=lambda ledger: now - ledger.progress_at)
    done = await redis.scard(keys.dispatch_done(still.statement_id))
    return Stuck("fan-outs not finished", len(ledgers), now - still.progress_at,
                 f"{still.statement_id}: started {_age(now - still.started_at)} ago, "
                 f"{done} of {still.batches} batches done"
                 f"{'' if still.queued_all else ', audience still being cut'}")


async def _deliveries(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """Approval prompts, hold alerts and codes not handed over."""
    waiting = [json.loads(raw)["at"] for raw in
               (await redis.hgetall(keys.deliveries_pending())).values()]
    if not waiting:
        return None
    return Stuck("prompts and codes not handed over", len(waiting), now - min(waiting))


async def _kept(redis: Redis, keys: Keys) -> Stuck | None:
    """Messages (prompts, statements, decisions) no consumer has finished. One that cannot
    be read has waited an unknown time: stuck however young (a person must look at it)."""
    kept = await outbox.waiting(redis, keys)
    if not kept:
        return None
    readable = [k for k in kept if k[2] >= 0]
    unreadable = [mid for mid, _, sends in kept if sends < 0]
    parked = sum(1 for _, _, sends in readable if sends >= outbox.MAX_SENDS)
    parts, age = [], math.inf  # an unreadable one: waiting an unknown time
    if readable:
        oldest = max(readable, key=lambda k: k[1])
        parts.append(f"{oldest[0]}, sent {oldest[2]} time(s)")
        age = math.inf if unreadable else oldest[1]
    if unreadable:
        parts.append(f"{len(unreadable)} unreadable (e.g. {unreadable[0]}; `redis-cli HGET "
                     f"{keys.followups()} ID` shows it)")
    if parked:
        parts.append(f"{parked} parked (sent again as a worker starts or rejoins, and "
                     "hourly; one its consumer refuses stays until removed: "
                     f"`redis-cli HDEL {keys.followups()} ID`)")
    return Stuck("messages waiting for their consumer", len(kept), age, "; ".join(parts))


async def _reports(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """Reports accepted (202) and not taken in yet."""
    raws = list((await redis.hgetall(keys.outbox())).values())
    if not raws:
        return None
    received = [datetime.fromisoformat(json.loads(r)["received_at"]).timestamp() for r in raws]
    return Stuck("reports accepted, not taken in", len(raws), now - min(received))


async def _dead_letters(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """Dead letters since the last `loa doctor --seen-dead-letters`."""
    seen = await redis.get(keys.dead_letters_seen()) or "0-0"
    letters = await redis.xrange(keys.dead_letters(), f"({seen}", "+")
    if not letters:
        return None
    first_ms = int(str(letters[0][0]).split("-")[0])
    reason = json.loads(letters[-1][1]["letter"]).get("reason", "")
    return Stuck("dead letters not looked at", len(letters), now - first_ms / 1000,
                 f"latest: {reason[:120]}; see them with "
                 f"`redis-cli XRANGE {keys.dead_letters()} - +`, then "
                 "`loa doctor --seen-dead-letters`")


async def _unsealed(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """Audit entries not sealed into the chain yet (coordinator.audit), once older than
    UNSEALED_GRACE_S: a sealer (the scheduler, else the workers) runs twice a second."""
    last = await redis.hget(keys.audit_head(), "last") or "0-0"
    waiting = await redis.xrange(keys.audit(), f"({last}", "+", count=UNSEALED_COUNTED)
    if not waiting:
        return None
    age = now - int(str(waiting[0][0]).split("-")[0]) / 1000
    if age < UNSEALED_GRACE_S:
        return None
    many = f"{len(waiting)}+" if len(waiting) == UNSEALED_COUNTED else str(len(waiting))
    return Stuck("audit entries not sealed", len(waiting), age,
                 f"{many} entries; until sealed they could be changed unseen")


async def _statuses_not_asked(redis: Redis, keys: Keys, now: float) -> Stuck | None:
    """SMS whose status callbacks never came, due to be asked of the provider
    (dispatch.status_sweep) for longer than STATUS_GRACE_S: no worker is asking (one the
    provider does not answer logs it, and asks again an interval later). Their age: how
    long they have been due."""
    due = await redis.zrangebyscore(keys.unconfirmed(), "-inf", now - STATUS_GRACE_S,
                                    start=0, num=1, withscores=True)
    if not due:
        return None
    count = await redis.zcount(keys.unconfirmed(), "-inf", now - STATUS_GRACE_S)
    return Stuck("SMS statuses not asked of the provider", count, now - due[0][1],
                 "their status callbacks never came; a running worker asks Twilio for them")


async def mark_dead_letters_seen(redis: Redis, keys: Keys) -> int:
    """Note that every dead letter so far has been looked at; how many were new."""
    seen = await redis.get(keys.dead_letters_seen()) or "0-0"
    letters = await redis.xrange(keys.dead_letters(), f"({seen}", "+")
    if letters:
        await redis.set(keys.dead_letters_seen(), str(letters[-1][0]))
    return len(letters)


def _age(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`; infinite: an unknown time. Pure."""
    if seconds == math.inf:
        return "an unknown time"
    if seconds < 120:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
