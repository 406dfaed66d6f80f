"""Keys that used to live for ever now have a lifetime: provider ids and early status
callbacks expire a week on (a private redis-server, nothing else)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch.provider_ids import PROVIDER_IDS_KEPT_S, queue_provider_ids
from coordinator.dispatch.status_callbacks import queue_take_early, record_statuses, taken_early
from coordinator.embedded import Service
from coordinator.keys import Keys
from coordinator.state import Redis, connect

KEYS = Keys("loatest")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def redis_url(redis_server: Service) -> str:
    return redis_server.url


async def remember(redis: Redis, provider_id: str, delivery_id: str) -> str | None:
    """Record a send's provider id as a delivery's outcome is recorded (`queued`): the
    early status it took, if any."""
    pairs = {provider_id: delivery_id}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(KEYS.delivery(delivery_id), "status", "queued")
        queue_provider_ids(pipe, KEYS, pairs)
        queue_take_early(pipe, KEYS, pairs, NOW)
        return taken_early(pairs, (await pipe.execute())[-1]).get(delivery_id)


def test_a_week_is_the_lifetime() -> None:
    """Provider ids and early status callbacks are kept for 604,800 seconds, one week."""
    assert PROVIDER_IDS_KEPT_S == 604_800


def test_an_early_callback_waits_a_week_and_is_taken_by_the_send(redis_url: str) -> None:
    """A callback before its send is kept a week; the send takes its status and leaves the rest."""
    async def scenario() -> tuple[str | None, int, str | None, str | None, int, int]:
        redis = connect(redis_url)
        try:
            # the callback comes first: nothing to move yet, so it is kept
            got = (await record_statuses(redis, KEYS, [StatusUpdate("SM1", "delivered", "")],
                                         NOW))[0]
            early_ttl = await redis.ttl(KEYS.early_callbacks())
            await record_statuses(redis, KEYS, [StatusUpdate("SM2", "sent", "")], NOW)
            # then the send is recorded: it takes its early status, the other one stays
            early = await remember(redis, "SM1", "delivery-1")
            left = await redis.hget(KEYS.early_callbacks(), "SM1")
            id_ttl = await redis.ttl(KEYS.provider_message("SM1"))
            others = await redis.hlen(KEYS.early_callbacks())
            return got, early_ttl, early, left, id_ttl, others
        finally:
            await redis.aclose()

    got, early_ttl, early, left, id_ttl, others = asyncio.run(scenario())
    assert got is None
    assert PROVIDER_IDS_KEPT_S - 5 <= early_ttl <= PROVIDER_IDS_KEPT_S
    assert (early, left, others) == ("delivered", None, 1)
    assert PROVIDER_IDS_KEPT_S - 5 <= id_ttl <= PROVIDER_IDS_KEPT_S


def test_a_send_with_no_early_callback_takes_nothing(redis_url: str) -> None:
    """A send with no early callback gets no status and still records its provider id."""
    async def scenario() -> tuple[str | None, str | None]:
        redis = connect(redis_url)
        try:
            early = await remember(redis, "SM3", "delivery-3")
            return early, await redis.get(KEYS.provider_message("SM3"))
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()) == (None, "delivery-3")
