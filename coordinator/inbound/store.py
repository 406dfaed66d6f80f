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
        if await pipe.hget(key, "status") != "pending":
            return False
        pipe.multi()
        if effects is not None:
            effects(pipe)
        pipe.hset(key, mapping={"status": "done", "answer": answer})
        pipe.hdel(key, "from", "body")  # the sender's number is not kept past its use
        pipe.expire(key, KEEP_DONE_S)
        pipe.zrem(keys.inbound_pending(), sid)
        return True

    return await transact(redis, [key], body)


async def stale_inbound(redis: Redis, keys: Keys, older_than_s: float,
                        now: float | None = None, limit: int = 100) -> list[str]:
    """MessageSids pending for longer than `older_than_s`, oldest first."""
    until = (time.time() if now is None else now) - older_than_s
    found: list[str] = await redis.zrangebyscore(keys.inbound_pending(), "-inf", until,
                                                 start=0, num=limit)
    return found
