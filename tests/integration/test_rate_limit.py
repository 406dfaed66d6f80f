"""The SMS rate limit is shared through a real Redis by every worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.dispatch.rate_limit import RateLimiter
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
