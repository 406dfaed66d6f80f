"""What every channel shares: retries with exponential backoff and jitter, and a rate limit
that all workers share through Redis (a token bucket)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from channels.base import Channel, OutboundMessage, Receipt, TransientDeliveryError
from coordinator.state import Redis

# KEYS[1] = bucket; ARGV = rate per second, burst, now in ms. Returns ms to wait (0 = go).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""


def backoff_s(attempt: int, rng: random.Random, base_s: float = 0.5, cap_s: float = 30.0
              ) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1-based). Pure."""
    return rng.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


class RateLimiter:
    """At most `rate` acquisitions per second across every process sharing `key`."""

    def __init__(self, redis: Redis, key: str, rate: float, burst: float | None = None) -> None:
        self.redis = redis
        self.key = key
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)

    async def acquire(self) -> None:
        """Wait until a token is free."""
        while True:
            wait_ms = int(await self.redis.eval(_TOKEN_BUCKET, 1, self.key, self.rate,
                                                self.burst, int(time.time() * 1000)))
            if wait_ms <= 0:
                return
            await asyncio.sleep(wait_ms / 1000)


async def send_with_retries(
    channel: Channel, message: OutboundMessage, attempts: int,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    before_retry: Callable[[], Awaitable[Receipt | None]] | None = None,
) -> Receipt:
    """Send; retry transient failures with backoff. Before a retry, `before_retry` may find
    that the failed attempt reached the provider after all (a timeout after acceptance), so
    nothing is sent twice. Raises the last TransientDeliveryError after `attempts`, or a
    PermanentDeliveryError at once."""
    rng = rng or random.Random()
    for attempt in range(1, attempts + 1):
        try:
            return await channel.send(message)
        except TransientDeliveryError:
            if attempt == attempts:
                raise
            await sleep(backoff_s(attempt, rng))
            found = await before_retry() if before_retry is not None else None
            if found is not None:
                return found
    raise AssertionError("unreachable")
