"""Fixed-window counters in Redis: how many attempts a client (or a bucket of one) made in
the current window. What counts, and what a client is, is the web's business
(coordinator.web.security); this module only counts."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.keys import Keys
from coordinator.state import Redis


@dataclass(frozen=True)
class Limit:
    """At most `count` attempts per `window_s` seconds per client (and per bucket)."""

    bucket: str
    count: int
    window_s: int


@dataclass(frozen=True)
class Window:
    """One window's count so far, and the seconds left before it ends."""

    count: int
    ttl_s: int


async def count_in_window(redis: Redis, keys: Keys, limit: Limit, who: str) -> Window:
    """Count one attempt by `who` in the current window of `limit` (atomic, so a burst of
    concurrent attempts cannot all slip under the limit)."""
    key = keys.rate_window(limit.bucket, who)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, limit.window_s, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    return Window(int(count), int(ttl))


async def uncount_in_window(redis: Redis, keys: Keys, limit: Limit, who: str) -> None:
    """Take back one attempt by `who` (never below zero: no credit for attempts to come)."""
    key = keys.rate_window(limit.bucket, who)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.decr(key)
        pipe.expire(key, limit.window_s, nx=True)  # the window may have ended meanwhile
        left, _ = await pipe.execute()
    if int(left) < 0:
        await redis.delete(key)
