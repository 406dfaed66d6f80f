"""Lua scripts run by their SHA1 (`state.Script`), on a private redis-server: a Redis whose
script cache is empty (restarted, or never used) is given the text again, called alone or
in a pipeline."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.embedded import Service
from coordinator.state import Script, connect

pytestmark = pytest.mark.integration
INCR_BY = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


def test_a_script_runs_by_its_sha_and_survives_an_empty_script_cache(
        redis_server: Service) -> None:
    async def scenario() -> None:
        redis = connect(redis_server.url)
        try:
            await redis.delete("scripttest:n")
            await redis.script_flush()
            assert await INCR_BY(redis, ["scripttest:n"], [2]) == 2  # loaded by EVAL
            assert await INCR_BY(redis, ["scripttest:n"], [3]) == 5  # by its SHA1
            await redis.script_flush()  # as after a restart
            async with redis.pipeline(transaction=True) as pipe:
                INCR_BY.queue(pipe, ["scripttest:n"], [10])
                INCR_BY.queue(pipe, ["scripttest:n"], [20])
                assert await pipe.execute() == [15, 35]
            assert await redis.script_exists(INCR_BY.sha) == [True]
        finally:
            await redis.aclose()

    asyncio.run(scenario())
