"""The rate limits every worker shares (SMS per sender; email per sender when
`LOA_EMAIL_RATE_PER_S` is set): a token bucket in Redis, taken atomically by a Lua script.
Handed to a channel as its ``channels.base.RateLimit``.

Two lanes share one bucket: a statement's fan-out (the bulk lane) takes a token only while
more than `reserve` are left, so an approval prompt, a hold alert or a code (the priority
lane, reserve 0) always finds one within a token's time, however big the fan-out."""

from __future__ import annotations

import asyncio
import time
from collections import deque

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
    leaves `reserve` tokens in the bucket for others (0: it takes any token).

    Callers wait in line, first come first served, and one task (the asker) asks Redis for
    them: each answer wakes as many callers as it brought tokens, and no more. A fan-out has
    a hundred sends waiting; woken all at once for every answer, as an earlier version did,
    they cost a tenth of a core at 300 tokens a second, to find the tokens gone. Once half
    of what was taken is used, the asker asks ahead, so sends do not stall for its round
    trip."""

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
        # Each waiting caller's turn: True when it was handed a token, False when it must
        # ask the bucket itself (the limiter was closed meanwhile).
        self._line: deque[asyncio.Future[bool]] = deque()
        self._asker: asyncio.Task[None] | None = None
        self._closed = False  # shut down: no asker any more, a caller asks for itself

    async def acquire(self) -> None:
        """Wait until a token is free."""
        if self._held > 0 and time.monotonic() > self._held_until:
            self._held = 0  # taken long ago: the bucket has refilled since
        if self._held > 0 and not self._live_line():
            self._held -= 1
            if self._held < self.take // 2:
                self._ask_soon()  # ahead, for the sends to come
            return
        if self._closed:
            await self._ask_alone()
            return
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        self._ask_soon()
        try:
            handed = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None \
                    and turn.result():
                self._held += 1  # handed a token as it was cut off: the next caller's
                self._hand_out()
            raise
        if not handed:
            await self._ask_alone()

    def give_back(self) -> None:
        """A turn taken and not used (the message was no longer wanted when it came): the
        next caller in line takes it at once, or the next to come while it is held. One taken
        longer ago than :data:`HELD_FOR_S` is dropped, as what is held then is."""
        if time.monotonic() > self._held_until:
            return
        self._held += 1
        self._hand_out()

    async def close(self) -> None:
        """At shutdown: stop the asker (it would outlive its event loop), and give up what
        is held. A send still under way asks the bucket for itself after this."""
        self._closed = True
        asker = self._asker
        if asker is not None and asker.get_loop() is asyncio.get_running_loop():
            asker.cancel()
            await asyncio.wait({asker}, timeout=1.0)
        self._asker = None  # (one of an event loop that has ended is gone with it)
        self._held = 0
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(False)

    def _ask_soon(self) -> None:
        """Start the asker, unless it is at work (or the limiter is closed)."""
        # (one that has just finished may not have run its done callback yet)
        asker, loop = self._asker, asyncio.get_running_loop()
        if asker is not None and asker.get_loop() is not loop:
            # Carried over from an event loop that has ended: its asker and callers are
            # gone with it.
            self._line = deque(t for t in self._line if t.get_loop() is loop)
            asker = None
        if (asker is None or asker.done()) and not self._closed:
            self._asker = asyncio.create_task(self._serve())
            self._asker.add_done_callback(self._asker_ended)

    def _asker_ended(self, task: asyncio.Task[None]) -> None:
        if self._asker is task:
            self._asker = None
        if task.cancelled():
            # By close(), or its event loop ending with its callers, or by someone else:
            # whoever still waits in line asks the bucket for itself (no task is started
            # here, which would outlive a loop that is ending).
            while self._line:
                turn = self._line.popleft()
                if not turn.done():
                    turn.set_result(False)
            return
        task.exception()  # handed to the callers in line already (see _serve)
        if self._live_line() and not self._closed:
            self._ask_soon()  # a caller came in line as the asker was leaving

    async def _serve(self) -> None:
        """Ask the bucket while anyone waits in line, handing out what it grants; with no
        one left in line, once more while less than half of `take` is held (ahead: the
        sends just handed tokens come back for more). A failed ask fails every caller in
        line (each send decides itself whether to try again), and the asker stops."""
        ahead = False
        while True:
            try:
                wait_ms, granted = await self._ask_bucket(self.take)
            except Exception as exc:
                while self._line:
                    turn = self._line.popleft()
                    if not turn.done():
                        turn.set_exception(exc)
                raise
            if granted > 0:
                if time.monotonic() > self._held_until:
                    self._held = 0  # given up: taken too long ago
                self._held += granted
                self._held_until = time.monotonic() + HELD_FOR_S
                self._hand_out()
            if self._live_line():
                ahead = False
                if granted == 0:
                    await asyncio.sleep(wait_ms / 1000)
                continue
            if ahead or granted == 0 or self._held >= self.take // 2:
                return  # what is left is held for the next sends
            ahead = True

    async def _ask_alone(self) -> None:
        """Without an asker (the limiter closed, or its asker cancelled): ask the bucket for
        one token until it grants it."""
        while True:
            wait_ms, granted = await self._ask_bucket(1)
            if granted > 0:
                return
            await asyncio.sleep(wait_ms / 1000)

    async def _ask_bucket(self, want: int) -> tuple[int, int]:
        """One run of the script: (ms to wait, tokens granted)."""
        wait_ms, granted = await _TOKEN_BUCKET(
            self.redis, [self.key], [self.rate, self.burst, int(time.time() * 1000),
                                     self.reserve, want])
        return int(wait_ms), int(granted)

    def _hand_out(self) -> None:
        """Give held tokens to the callers in line, first come first served."""
        while self._held > 0 and self._line:
            turn = self._line.popleft()
            if not turn.done():  # else it was cancelled while waiting
                turn.set_result(True)
                self._held -= 1

    def _live_line(self) -> bool:
        """Whether anyone still waits in line (callers cut off at its head are dropped)."""
        while self._line and self._line[0].done():
            self._line.popleft()
        return bool(self._line)
