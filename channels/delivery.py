"""What every channel shares: retries with exponential backoff and full jitter.

The rate limit all workers share is kept by the coordinator (in Redis,
``coordinator.dispatch.rate_limit``) and handed to a channel as a ``channels.base.RateLimit``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from channels.base import Channel, OutboundMessage, Receipt, TransientDeliveryError

_RNG = random.Random()  # seeding one per message costs more than the jitter is worth


def backoff_s(attempt: int, rng: random.Random, base_s: float = 0.5, cap_s: float = 30.0
              ) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1-based). Pure."""
    return rng.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


async def send_with_retries(
    channel: Channel, message: OutboundMessage, attempts: int,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    before_retry: Callable[[], Awaitable[Receipt | None]] | None = None,
    look_first: bool = False,
) -> Receipt:
    """Send; retry transient failures with backoff. Before a retry (and before the first
    attempt when `look_first`: an attempt cut off by a crash), `before_retry` may find that
    an earlier attempt reached the provider after all (a timeout after acceptance), so
    nothing is sent twice. A look that fails is a failed attempt like a failed send: the
    message is never sent without an answer to it (the next attempt looks again). Raises
    the last TransientDeliveryError after `attempts`, or a PermanentDeliveryError at once."""
    rng = rng or _RNG
    look = look_first and before_retry is not None
    for attempt in range(1, attempts + 1):
        try:
            if look and before_retry is not None:
                found = await before_retry()
                if found is not None:
                    return found
            return await channel.send(message)
        except TransientDeliveryError:
            if attempt == attempts:
                raise
            await sleep(backoff_s(attempt, rng))
        look = before_retry is not None
    raise AssertionError("unreachable")
