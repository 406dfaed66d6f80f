"""The rate limits every worker shares (SMS per sender; email per sender when
`LOA_EMAIL_RATE_PER_S` is set): a token bucket in Redis, taken atomically by a Lua script.
Handed to a channel as its ``channels.base.RateLimit``.

Two lanes share one bucket: a statement's fan-out (the bulk lane) takes a token only while
more than `reserve` are left, so an approval prompt, a hold alert or a code (the priority
lane, reserve 0) always finds one within a token's time, however big the fan-out."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from coordinator.state import Redis, Script

# KEYS[1] = bucket; ARGV = rate per second, burst, now in ms, tokens to leave for others,
# tokens wanted at most. Returns {ms to wait, tokens granted}: {0, n >= 1} means go. With
# none free, the bulk lane waits until as many as it wants are (one round trip for them,
# however late its event loop wakes it), the priority lane until one is.
_TOKEN_BUCKET = Script("""
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local wait, granted = 0, 0
local free = math.floor(tokens - reserve)
if free >= 1 then
  granted = math.min(want, free)
  tokens = tokens - granted
else
  local need = reserve > 0 and want or 1  -- the priority lane waits for one token only
  wait = math.ceil((need + reserve - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {wait, granted}
""")


HELD_FOR_S = 1.0
"""Tokens taken from the bucket and not used within this long are given up: used later, on
top of a refilled bucket, they would let a burst past the shared rate."""


def lane_reserve(rate: float) -> float:
    """Tokens the bulk lane leaves for the priority lane: a fifth of a second's worth, at
    least one. Pure."""
    return max(1.0, rate / 5)


class RateLimiter:
    """At most `rate` acquisitions per second across every process sharing `key`; this one
    leaves `reserve` tokens in the bucket for others (0: it takes any token)."""

    def __init__(self, redis: Redis, key: str, rate: float, burst: float | None = None,
                 reserve: float = 0.0) -> None:
        self.redis = redis
        self.key = key
        self.rate = rate
        # Both lanes agree on the bucket's size: a second's worth plus the reserve.
        self.burst = burst if burst is not None else max(1.0, rate) + lane_reserve(rate)
        self.reserve = reserve
        # At a high rate, tokens are taken up to 20 ms' worth at a time (one round trip for
        # several sends); at 50/s or less, one at a time.
        self.take = max(1, min(32, int(rate // 50)))
        self._held = 0
        self._held_until = 0.0  # monotonic: what is held is given up after this
        # One caller at a time asks Redis; the others wait for its answer, then take what it
        # got without a round trip of their own. A fan-out has a hundred sends waiting, and
        # each polling the bucket on its own cost a round trip per send and a stampede at
        # every refill. (Not a lock: handing a lock on costs an event-loop turn per send.)
        # Once half of what was taken is used, the next ask starts in the background, so
        # sends do not stall for its round trip.
        self._asking: asyncio.Event | None = None
        self._ahead: set[asyncio.Task[None]] = set()
        self._closed = False  # shut down: nothing is asked ahead any more

    async def acquire(self) -> None:
        """Wait until a token is free."""
        while True:
            if self._held > 0 and time.monotonic() > self._held_until:
                self._held = 0  # taken long ago: the bucket has refilled since
            if self._held > 0:
                self._held -= 1
                if self._held < self.take // 2 and self._asking is None and not self._closed:
                    # marked as asking now: the task starts only at the loop's next turn
                    asked = self._begin()
                    ahead = asyncio.create_task(self._ask(asked))
                    self._ahead.add(ahead)
                    # also when cancelled before its first step (its `finally` never runs)
                    ahead.add_done_callback(partial(self._end, asked))
                return
            if self._asking is not None:
                await self._asking.wait()
                continue
            await self._ask(self._begin())

    async def close(self) -> None:
        """At shutdown: stop asking ahead (the task would outlive its event loop), and give
        up what is held. A send still under way may take a token after this, never ahead."""
        self._closed = True
        ahead = set(self._ahead)
        for task in ahead:
            task.cancel()
        if ahead:
            await asyncio.wait(ahead, timeout=1.0)
        self._held = 0

    def _begin(self) -> asyncio.Event:
        """Mark an ask as under way; its event is set when it is over."""
        self._asking = asyncio.Event()
        return self._asking

    def _end(self, asked: asyncio.Event, task: asyncio.Task[None]) -> None:
        """An ask ahead is over. Its failure is left to the next caller that finds nothing
        held, which asks again and gets the error itself (taken here, so not logged as
        never retrieved)."""
        self._ahead.discard(task)
        if not task.cancelled():
            task.exception()
        if self._asking is asked:
            self._asking = None
        asked.set()

    async def _ask(self, asked: asyncio.Event) -> None:
        """Take up to `take` tokens from the bucket, or wait until that many are free."""
        try:
            wait_ms, granted = await _TOKEN_BUCKET(
                self.redis, [self.key], [self.rate, self.burst, int(time.time() * 1000),
                                         self.reserve, self.take])
            if int(granted) > 0:
                self._held += int(granted)
                self._held_until = time.monotonic() + HELD_FOR_S
            else:
                await asyncio.sleep(int(wait_ms) / 1000)
        finally:
            if self._asking is asked:
                self._asking = None
            asked.set()  # every waiter takes from what was granted, or asks next
