"""The SMS rate limit every worker shares: a token bucket in Redis, taken atomically by a
Lua script. Handed to a channel as its ``channels.base.RateLimit``."""

from __future__ import annotations

import asyncio
import time

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
