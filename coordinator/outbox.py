"""Messages that must follow a committed change, kept in Redis until they are sent.

A transition writes its follow-up messages (`queue`) in the same MULTI as the
change itself; the worker sends them after the commit and removes them
(`sent`). A crash or a broker outage in between loses none: `drain` sends what
has waited longer than a few seconds. Sending twice is harmless, every consumer
is idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping

from coordinator import topics
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
Message = tuple[str, str, bytes]  # (topic name, key, value)


def queue(pipe: Pipeline, keys: Keys, messages: Mapping[str, Message]) -> None:
    """Inside MULTI: keep each message (by its id) until it is sent."""
    for mid, (topic, key, value) in messages.items():
        pipe.hset(keys.followups(), mid, json.dumps(
            {"topic": topic, "key": key, "value": value.decode(), "at": time.time()}))


async def sent(redis: Redis, keys: Keys, ids: list[str]) -> None:
    """Forget messages that have been handed to the broker."""
    if ids:
        await redis.hdel(keys.followups(), *ids)


async def drain(redis: Redis, keys: Keys, send: Send, older_than_s: float = 5.0) -> int:
    """Send the messages a crash or an outage left behind; how many were sent."""
    by_name = {spec.name: spec for spec in topics.ALL}
    stale = 0
    for mid, raw in (await redis.hgetall(keys.followups())).items():
        entry = json.loads(raw)
        if time.time() - entry["at"] < older_than_s:
            continue
        await send(by_name[entry["topic"]], entry["key"], entry["value"].encode())
        await redis.hdel(keys.followups(), mid)
        stale += 1
    return stale
