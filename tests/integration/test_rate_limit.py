"""The SMS rate limit is shared through a real Redis by every worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.dispatch.rate_limit import RateLimiter, lane_reserve
from coordinator.embedded import Service, start_redis
from coordinator.state import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    service: Service = start_redis(tmp_path / "redis", appendonly=False)
    try:
        yield service.url
    finally:
        service.stop()


async def test_two_workers_share_one_rate(redis_url: str) -> None:
    """Two limiters on the same bucket at 20/s: 40 sends take at least 1.9 s between them
    (a lower bound only: a slow machine can only make it slower)."""
    clients = [connect(redis_url), connect(redis_url)]
    limiters = [RateLimiter(c, "loatest:rate:sms:+15005550006", rate=20, burst=1)
                for c in clients]
    started = time.monotonic()

    granted: list[float] = []

    async def worker(limiter: RateLimiter) -> int:
        for _ in range(20):
            await limiter.acquire()
            granted.append(time.monotonic())
        return 20

    try:
        sent = await asyncio.gather(*(worker(limiter) for limiter in limiters))
    finally:
        for c in clients:
            await c.aclose()
    assert sum(sent) == 40
    assert time.monotonic() - started >= 1.9
    # Over any 1-second window, never more than the rate (plus the one-token burst).
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert busiest <= 21


async def test_a_prompt_does_not_wait_behind_a_fan_out(redis_url: str) -> None:
    """A fan-out (the bulk lane, 20 senders) keeps a 5/s bucket drained; a prompt (the
    priority lane) still gets a token within one token's time (0.2 s), while the bulk lane
    never takes the reserve: it waits for tokens above it."""
    client = connect(redis_url)
    key = "loatest:rate:sms:lanes"
    bulk = RateLimiter(client, key, rate=5, reserve=lane_reserve(5))
    prompt = RateLimiter(client, key, rate=5)
    stop = asyncio.Event()
    bulk_grants: list[float] = []

    async def fan_out() -> None:
        while not stop.is_set():
            await bulk.acquire()
            bulk_grants.append(time.monotonic())

    senders = [asyncio.create_task(fan_out()) for _ in range(20)]
    try:
        await asyncio.sleep(2.5)  # the burst is spent; the bulk lane now takes what refills
        asked = time.monotonic()
        await prompt.acquire()
        waited = time.monotonic() - asked
    finally:
        stop.set()
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        await client.aclose()
    assert (lane_reserve(5), bulk.burst) == (1.0, 6.0)
    assert waited < 0.2, waited
    # 2.5 s at 5/s on a bucket of 6 with 1 held back: at most 5 (burst) + 12.5 refill.
    assert 10 <= len(bulk_grants) <= 18


async def test_callers_of_one_limiter_share_its_round_trips(redis_url: str) -> None:
    """A hundred sends of one fan-out wait on one limiter: one asks Redis at a time, for up
    to `take` tokens (20 at 1,000/s), the others take from its answer, so a hundred tokens
    cost five script runs and one asked ahead, not a hundred (and no stampede at each
    refill)."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:turns", rate=1000)
    async def runs() -> int:  # scripts run: by SHA1, or by text when not loaded yet
        stats = await client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0)
                   - stats.get(f"cmdstat_{c}", {}).get("failed_calls", 0)
                   for c in ("evalsha", "eval"))

    try:
        before = await runs()
        await asyncio.gather(*(limiter.acquire() for _ in range(100)))
        await asyncio.gather(*limiter._ahead)  # the ask ahead for the next sends
        after = await runs()
    finally:
        await client.aclose()
    assert limiter.take == 20
    assert after - before == 6
    assert limiter._held == 20  # what the ask ahead took waits for the next sends


async def test_an_ask_ahead_cut_off_before_it_began_leaves_no_one_waiting(
        redis_url: str) -> None:
    """The ask ahead is a task; cancelled before its first step (a worker stopping), its own
    clean-up never runs. The limiter still answers the next callers."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:cut", rate=1000)
    try:
        for _ in range(11):  # 20 taken, 9 left: the next ask has begun, not yet run
            await limiter.acquire()
        [ahead] = limiter._ahead
        ahead.cancel()
        await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(30))), 5)
    finally:
        await client.aclose()
    assert ahead.cancelled()


async def test_tokens_held_too_long_are_given_up_and_closing_stops_asking_ahead(
        redis_url: str) -> None:
    """Tokens taken and not used within HELD_FOR_S are not used later (on top of a refilled
    bucket they would let a burst past the shared rate): the next send asks the bucket
    again. Closing cancels the ask ahead, which would outlive the worker's event loop."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:held", rate=1000)
    try:
        await limiter.acquire()
        assert limiter._held == 19
        limiter._held_until = time.monotonic() - 0.001  # as if taken HELD_FOR_S ago
        await limiter.acquire()
        assert limiter._held == 19  # the old 19 given up, 20 fresh ones taken
        state = await client.hgetall("loatest:rate:sms:held")
        assert float(state["tokens"]) < limiter.burst - 30  # two takes of 20 (less refill)
        for _ in range(10):  # 9 held: the next ask has begun, not yet run
            await limiter.acquire()
        [ahead] = limiter._ahead
        await limiter.close()
        assert ahead.cancelled()
        assert (limiter._ahead, limiter._held) == (set(), 0)
        for _ in range(20):  # a send still under way takes tokens as it asks, never ahead
            await limiter.acquire()
        assert limiter._ahead == set()
    finally:
        await client.aclose()
