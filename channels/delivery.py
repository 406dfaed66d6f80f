"""What every channel shares: retries with exponential backoff and full jitter.

The rate limit all workers share is kept by the coordinator (in Redis,
``coordinator.dispatch.rate_limit``) and handed to a channel as a ``channels.base.RateLimit``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from channels.base import (
    Channel,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)

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
    """Send; retry transient failures with backoff, up to `attempts`.

    Once an attempt may have reached the provider (no answer came: the error's
    `maybe_taken`; or, with `look_first`, an attempt a crash cut off), every later attempt
    first asks `before_retry` whether the provider has the message, so nothing is sent
    twice. A look that fails (the provider away) uses up that attempt, and the next one
    looks again; only the last attempt, still without an answer, sends all the same, and so
    does one whose look the provider refuses for good: a possible duplicate rather than an
    alert never sent. Raises the last TransientDeliveryError after `attempts`, or a
    PermanentDeliveryError of a send at once."""
    rng = rng or _RNG
    maybe_there = look_first
    for attempt in range(1, attempts + 1):
        try:
            if maybe_there and before_retry is not None:
                found = await _look(before_retry, last=attempt == attempts)
                if found is not None:
                    return found
            return await channel.send(message)
        except TransientDeliveryError as exc:
            maybe_there = maybe_there or exc.maybe_taken
            if attempt == attempts:
                raise
            await sleep(backoff_s(attempt, rng))
    raise AssertionError("unreachable")


async def _look(before_retry: Callable[[], Awaitable[Receipt | None]], last: bool
                ) -> Receipt | None:
    """The provider's receipt for an earlier attempt, None when it has none; a look that
    fails is a failed attempt (TransientDeliveryError), but on the `last` attempt counts as
    none found, and so does one the provider refuses for good (a key that may not read
    messages: asking again would only use the attempts up)."""
    try:
        return await before_retry()
    except PermanentDeliveryError:
        return None
    except DeliveryError as exc:
        if last:
            return None
        raise TransientDeliveryError(f"{exc} (asking whether an earlier attempt got "
                                     "through)", maybe_taken=True) from exc
