"""Inbound SMS kept in Redis before they are answered, and finished from there.

An SMS is stored under its MessageSid (once: a replayed webhook finds it) and stays
pending until what it asks for is done; then its answer (the TwiML sent back) replaces the
sender and body, and is kept 30 days for replays. Whatever leaves one pending (a broker or
Redis blip, a web process killed) is finished later from the pending index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, transact

KEEP_DONE_S = 30 * 86400  # Twilio retries within seconds; a stolen replay gets nothing


@dataclass(frozen=True)
class InboundSms:
    """An SMS to our number, as the webhook received it."""

    sid: str
    sender: str
    body: str
    received_at: float


async def store_inbound(redis: Redis, keys: Keys, sms: InboundSms) -> str | None:
    """Keep an SMS once. None when it is new (now pending); else what is stored of it: its
    answer, or "" while it is still pending. Raises RedisError when Redis is unreachable."""
    key = keys.inbound_sms(sms.sid)

    async def body(pipe: Pipeline) -> str | None:
        row = await pipe.hgetall(key)
        if row:
            return str(row.get("answer", ""))
        pipe.multi()
        pipe.hset(key, mapping={"from": sms.sender, "body": sms.body, "status": "pending",
                                "received_at": repr(sms.received_at)})
        pipe.zadd(keys.inbound_pending(), {sms.sid: sms.received_at})
        return None

    return await transact(redis, [key], body)


async def load_pending(redis: Redis, keys: Keys, sid: str) -> InboundSms | None:
    """A pending SMS as stored; None when it is unknown or already finished."""
    row = await redis.hgetall(keys.inbound_sms(sid))
    if row.get("status") != "pending":
        return None
    return InboundSms(sid, row["from"], row["body"], float(row["received_at"]))


async def finish_inbound(redis: Redis, keys: Keys, sid: str, answer: str,
                         effects: Callable[[Pipeline], None] | None = None) -> bool:
    """Mark an SMS done with its answer, in one MULTI with `effects` (state changes and
    audit entries that must happen once); True when this call finished it, False when it
    was finished already (then `effects` are not applied)."""
    key = keys.inbound_sms(sid)

    async def body(pipe: Pipeline) -> bool:
        if not await still_pending(pipe, keys, sid):
            return False
        pipe.multi()
        if effects is not None:
            effects(pipe)
        queue_done(pipe, keys, sid, answer)
        return True

    return await transact(redis, [key], body)


async def still_pending(pipe: Pipeline, keys: Keys, sid: str) -> bool:
    """Whether the SMS waits to be finished (read inside a transaction, before MULTI)."""
    return bool(await pipe.hget(keys.inbound_sms(sid), "status") == "pending")


def queue_done(pipe: Pipeline, keys: Keys, sid: str, answer: str) -> None:
    """Queue (inside MULTI) the finishing of an SMS: done, with its answer kept for replays
    and its sender and body forgotten."""
    key = keys.inbound_sms(sid)
    pipe.hset(key, mapping={"status": "done", "answer": answer})
    pipe.hdel(key, "from", "body")  # the sender's number is not kept past its use
    pipe.expire(key, KEEP_DONE_S)
    pipe.zrem(keys.inbound_pending(), sid)


async def forget_pending(redis: Redis, keys: Keys, sid: str) -> None:
    """Drop a MessageSid from the pending index (its SMS is gone or finished)."""
    await redis.zrem(keys.inbound_pending(), sid)


async def retry_later(redis: Redis, keys: Keys, sid: str, now: float | None = None) -> None:
    """Move a pending SMS to the back of the queue: tried again after another wait, not on
    every round (a MessageSid no longer pending is left out)."""
    await redis.zadd(keys.inbound_pending(), {sid: time.time() if now is None else now},
                     xx=True)


async def stale_inbound(redis: Redis, keys: Keys, older_than_s: float,
                        now: float | None = None, limit: int = 100) -> list[str]:
    """MessageSids pending for longer than `older_than_s`, oldest first."""
    until = (time.time() if now is None else now) - older_than_s
    found: list[str] = await redis.zrangebyscore(keys.inbound_pending(), "-inf", until,
                                                 start=0, num=limit)
    return found


async def is_done(redis: Redis, keys: Keys, sid: str) -> bool:
    """Whether the inbound SMS has been answered and finished."""
    return bool(await redis.hget(keys.inbound_sms(sid), "status") == "done")
