"""Messages kept in Redis from before they go on the broker until their consumer has done
what they ask: Redis is the record, the broker carries.

A transition writes its follow-up messages (`queue`) in the same MULTI as the change
itself; anything else sends through :func:`send_kept`. The consumer removes a message once
its effect is recorded (`done`). A crash, a broker outage, or a broker restarted empty
loses none: `drain` sends again what has waited longer than :data:`RESEND_AFTER_S`, then
twice as long after each send, up to :data:`LONGEST_WAIT_S` (a consumer far behind is not
flooded with copies). Only its consumer forgets a message: one still not finished after
:data:`MAX_SENDS` sends is noted in the dead letters (which `loa doctor` shows) and stays
kept, still sent again, since a broker restarted empty may have lost every copy of it.
Sending twice is harmless, every consumer is idempotent.
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
"""How long a message waits for its consumer before it is sent again (the first time)."""
LONGEST_WAIT_S = 600.0
"""The wait between sends doubles after each, up to this."""
MAX_SENDS = 6
"""Sends after which a message no consumer finishes is noted in the dead letters."""
_SENT = """
local sent = 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    local entry = cjson.decode(raw)
    entry['at'] = tonumber(ARGV[1])
    entry['sends'] = (tonumber(entry['sends']) or 1) + 1
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
    sent = sent + 1
  end
end
return sent
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


async def sent(redis: Redis, keys: Keys, ids: list[str]) -> int:
    """Note that kept messages went on the broker (one send more, the wait starts again);
    those their consumer has finished meanwhile are left forgotten. How many were kept."""
    if not ids:
        return 0
    return int(await redis.eval(_SENT, 1, keys.followups(), repr(time.time()), *ids))


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
    """Send again what has waited longer than its wait (`older_than_s` after its first
    send, doubling after each); how many were sent."""
    resent = 0
    for mid, raw in (await redis.hgetall(keys.followups())).items():
        entry = json.loads(raw)
        sends = int(entry.get("sends", 1))
        if time.time() - entry["at"] < wait_before_resend(sends, older_than_s):
            continue
        await send(topics.spec_named(entry["topic"]), entry["key"], entry["value"].encode())
        if await sent(redis, keys, [mid]) and sends + 1 == MAX_SENDS:
            await _note_dead(redis, keys, mid, entry)
        resent += 1
    return resent


def wait_before_resend(sends: int, first_s: float = RESEND_AFTER_S) -> float:
    """How long a message sent `sends` times waits for its consumer before it is sent
    again: `first_s` (also for one kept and never sent), doubling after each send, at most
    :data:`LONGEST_WAIT_S`. Pure."""
    return min(first_s * (1 << min(max(sends - 1, 0), 30)), max(LONGEST_WAIT_S, first_s))


async def waiting(redis: Redis, keys: Keys) -> list[tuple[str, float, int]]:
    """Every kept message: (id, seconds since it was last sent, sends so far)."""
    now = time.time()
    return [(mid, now - entry["at"], int(entry.get("sends", 1)))
            for mid, entry in ((m, json.loads(r))
                               for m, r in (await redis.hgetall(keys.followups())).items())]


async def _note_dead(redis: Redis, keys: Keys, mid: str, entry: dict[str, object]) -> None:
    """A dead letter saying so, once: the message stays kept, and is still sent again."""
    letter = DeadLetter(topic=str(entry["topic"]), key=str(entry["key"]),
                        value=str(entry["value"])[:10_000],
                        reason=f"no consumer finished {mid} after {MAX_SENDS} sends; still "
                               f"kept and sent again every {LONGEST_WAIT_S:.0f} s at most")
    await redis.xadd(keys.dead_letters(), {"letter": letter.model_dump_json()},
                     maxlen=100_000, approximate=True)


def _entry(topic: str, key: str, value: bytes, at: float, sends: int) -> str:
    return json.dumps({"topic": topic, "key": key, "value": value.decode(), "at": at,
                       "sends": sends})
