"""The worker's consumer waits at the broker as long as Loa says, not faust's 1.5 s."""

from __future__ import annotations

import asyncio

import pytest

from coordinator import faust_kafka
from coordinator.settings import Settings
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


async def test_worker_consumer_waits_as_configured(stack: Stack) -> None:
    """faust hard-codes fetch_max_wait_ms=1500 and Tansu answers a fetch only when that wait
    is over, so each hop cost ~0.7 s. Our transport replaces it before the consumer starts;
    started against the real broker, aiokafka's fetcher carries our value (this breaks
    loudly if an aiokafka upgrade stops reading the attribute we set)."""
    app = faust_kafka.App("loatest-fetch-probe", broker=stack.broker.url, fetch_wait_ms=7,
                          web_enabled=False, store="memory://",
                          loop=asyncio.get_running_loop())
    thread = app.consumer._thread
    consumer = thread._create_consumer(loop=asyncio.get_running_loop())
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # the thread that would have run it never started


def test_default_wait_is_short() -> None:
    """Loa's default: 10 ms, a hop's latency on Tansu, not faust's 1,500."""
    assert Settings(_env_file=None).broker_fetch_wait_ms == 10
