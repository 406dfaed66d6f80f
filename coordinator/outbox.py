"""Messages kept in Redis from before they go on the broker until their consumer has done
what they ask: Redis is the record, the broker carries.

A transition writes its follow-up messages (`queue`) in the same MULTI as the change
itself; anything else sends through :func:`send_kept`. The consumer removes a message once
its effect is recorded (`done`). A crash, a broker outage, or a broker restarted empty
loses none: `drain` sends again what has waited longer than :data:`RESEND_AFTER_S`, and
gives up (a dead letter, which `loa doctor` shows) after :data:`MAX_SENDS`. Sending twice is
harmless, every consumer is idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping

from coordinator import topics
from coordinator.events import DeadLetter
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
Message = tuple[str, str, bytes]  # (topic name, key, value)
RESEND_AFTER_S = 30.0
"""How long a message waits for its consumer before it is sent again."""
MAX_SENDS = 6
"""Sends after which a message no consumer finishes becomes a dead letter."""
_RESTAMP = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""


def queue(pipe: Pipeline, keys: Keys, messages: Mapping[str, Message], sent: bool = True
          ) -> None:
    """Inside MULTI: keep each message (by its id) until its consumer is done with it.
    `sent=False`: its maker does the work at once itself (see :func:`keep`)."""
    now = time.time()
    for mid, (topic, key, value) in messages.items():
        pipe.hset(keys.followups(), mid, _entry(topic, key, value, now, 1 if sent else 0))


async def keep(redis: Redis, keys: Keys, messages: Mapping[str, Message]) -> None:
    """Keep messages without sending them, in one round trip: for work their maker does at
    once itself. Should that be cut off, the drain sends each to its consumer (its first
    send: it counts 0 until then)."""
    if messages:
        now = time.time()
        await redis.hset(keys.followups(), mapping={
            mid: _entry(topic, key, value, now, 0) for mid, (topic, key, value)
            in messages.items()})


async def send_kept(redis: Redis, keys: Keys, mid: str, spec: topics.TopicSpec, key: str,
                    value: bytes, send: Send) -> None:
    """Keep the message, then send it. Raises what `send` raises (the message stays kept,
    and is sent again by the worker's drain)."""
    await redis.hset(keys.followups(), mid, _entry(spec.name, key, value, time.time(), 1))
    await send(spec, key, value)


async def done(redis: Redis, keys: Keys, ids: list[str]) -> None:
    """Forget messages whose consumer has recorded their effect."""
    if ids:
        await redis.hdel(keys.followups(), *ids)


def queue_done(pipe: Pipeline, keys: Keys, ids: list[str]) -> None:
    """Inside MULTI: :func:`done`, with the record of the effect."""
    if ids:
        pipe.hdel(keys.followups(), *ids)


async def drain(redis: Redis, keys: Keys, send: Send, older_than_s: float = RESEND_AFTER_S
                ) -> int:
    """Send again what has waited longer than `older_than_s`; how many were sent."""
    resent = 0
    for mid, raw in (await redis.hgetall(keys.followups())).items():
        entry = json.loads(raw)
        if time.time() - entry["at"] < older_than_s:
            continue
        sends = int(entry.get("sends", 1))
        if sends >= MAX_SENDS:
            await _give_up(redis, keys, mid, entry)
            continue
        await send(topics.spec_named(entry["topic"]), entry["key"], entry["value"].encode())
        # Re-stamped only if it is still kept: the consumer may have finished it meanwhile.
        await redis.eval(_RESTAMP, 1, keys.followups(), mid, _entry(
            entry["topic"], entry["key"], entry["value"].encode(), time.time(), sends + 1))
        resent += 1
    return resent


async def waiting(redis: Redis, keys: Keys) -> list[tuple[str, float, int]]:
    """Every kept message: (id, seconds since it was last sent, sends so far)."""
    now = time.time()
    return [(mid, now - entry["at"], int(entry.get("sends", 1)))
            for mid, entry in ((m, json.loads(r))
                               for m, r in (await redis.hgetall(keys.followups())).items())]


async def _give_up(redis: Redis, keys: Keys, mid: str, entry: dict[str, object]) -> None:
    letter = DeadLetter(topic=str(entry["topic"]), key=str(entry["key"]),
                        value=str(entry["value"])[:10_000],
                        reason=f"no consumer finished {mid} after {MAX_SENDS} sends")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(keys.dead_letters(), {"letter": letter.model_dump_json()},
                  maxlen=100_000, approximate=True)
        pipe.hdel(keys.followups(), mid)
        await pipe.execute()


def _entry(topic: str, key: str, value: bytes, at: float, sends: int) -> str:
    return json.dumps({"topic": topic, "key": key, "value": value.decode(), "at": at,
                       "sends": sends})
