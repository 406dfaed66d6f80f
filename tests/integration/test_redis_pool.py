"""The Redis pool's quick path (an idle connection taken without redis-py's waiting
machinery) keeps the pool's promises: at most MAX_CONNECTIONS, and a command that finds
none idle waits its turn and is served (a private redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from coordinator import state
from coordinator.embedded import Service

pytestmark = pytest.mark.integration


async def test_more_commands_than_connections_all_get_their_answer(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 commands at once on 4 connections; then 4 held by blocking pops, and a fifth
    command waits for one of them and is served."""
    monkeypatch.setattr(state, "MAX_CONNECTIONS", 4)
    redis = state.connect(redis_server.url)
    pool = redis.connection_pool
    await redis.hset("pool:h", mapping={str(n): f"v{n}" for n in range(300)})
    answers = await asyncio.gather(*[redis.hget("pool:h", str(n)) for n in range(300)])
    assert answers == [f"v{n}" for n in range(300)]
    assert len(pool._available_connections) == 4 and not pool._in_use_connections

    pops = [asyncio.create_task(redis.blpop(["pool:empty"], timeout=0.3)) for _ in range(4)]
    await asyncio.sleep(0.05)  # each holds a connection now
    assert len(pool._in_use_connections) == 4
    waiting = asyncio.create_task(redis.hget("pool:h", "7"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # no connection for it yet
    assert await waiting == "v7"
    assert await asyncio.gather(*pops) == [None] * 4  # timed out first, then it ran
    assert len(pool._available_connections) == 4 and not pool._in_use_connections
    await redis.aclose()
