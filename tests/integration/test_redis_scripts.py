"""Lua scripts run by their SHA1 (`state.Script`), on a private redis-server: a Redis whose
script cache is empty (restarted, or never used) is given the text again, called alone or
in a pipeline, and a pipeline does not ask the server for its scripts every time; a
compare-and-set of a hash field with the writes that go with it, in one script."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.embedded import Service
from coordinator.state import Pipeline, Redis, Script, connect, run_pipeline, set_if_new

pytestmark = pytest.mark.integration


async def stat(redis: Redis, command: str, field: str = "calls") -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get(field, 0))


def test_a_script_runs_by_its_sha_and_survives_an_empty_script_cache(
        redis_server: Service) -> None:
    incr_by = Script("return redis.call('INCRBY', KEYS[1], ARGV[1]) -- alone")

    async def scenario() -> None:
        redis = connect(redis_server.url)
        try:
            await redis.delete("scripttest:n")
            await redis.script_flush()
            assert await incr_by(redis, ["scripttest:n"], [2]) == 2  # loaded by EVAL
            by_sha = await stat(redis, "evalsha") - await stat(redis, "evalsha", "failed_calls")
            assert await incr_by(redis, ["scripttest:n"], [3]) == 5  # by its SHA1
            assert await stat(redis, "evalsha") - await stat(
                redis, "evalsha", "failed_calls") == by_sha + 1
            await redis.script_flush()  # as after a restart
            assert await incr_by(redis, ["scripttest:n"], [10]) == 15
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_a_pipeline_asks_for_its_scripts_once_and_again_after_redis_lost_them(
        redis_server: Service) -> None:
    incr_by = Script("return redis.call('INCRBY', KEYS[1], ARGV[1]) -- in pipelines")

    def fill(pipe: Pipeline) -> None:
        incr_by.queue(pipe, ["scripttest:p"], [10])
        incr_by.queue(pipe, ["scripttest:p"], [20])

    async def scenario() -> None:
        redis = connect(redis_server.url)
        try:
            await redis.delete("scripttest:p")
            await redis.script_flush()
            exists, loads = await stat(redis, "script|exists"), await stat(redis, "script|load")
            assert await run_pipeline(redis, fill) == [10, 30]
            assert await run_pipeline(redis, fill) == [40, 60]
            assert await run_pipeline(redis, fill) == [70, 90]
            # asked once (and loaded), not once a pipeline
            assert await stat(redis, "script|exists") == exists + 1
            assert await stat(redis, "script|load") == loads + 1
            await redis.script_flush()  # as after a restart: loaded again, run again once
            assert await run_pipeline(redis, fill) == [100, 120]
            assert await stat(redis, "script|load") == loads + 2
            assert await redis.get("scripttest:p") == "120"
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_set_if_new_writes_the_rest_only_with_a_new_field(redis_server: Service) -> None:
    """The field and the writes queued with it are all made when the field is new, in one
    round trip, arguments of every kind as a pipeline would send them; none the second
    time."""
    def fill(pipe: Pipeline) -> None:
        pipe.zadd("ifnew:z", {"a": 1.5}, nx=True)
        pipe.xadd("ifnew:s", {"event": "{\"x\": \"Ngập sâu\"}"})
        pipe.hincrby("ifnew:n", "count", 2)

    async def scenario() -> None:
        redis = connect(redis_server.url)
        try:
            await redis.delete("ifnew:h", "ifnew:z", "ifnew:s", "ifnew:n")
            assert await set_if_new(redis, "ifnew:h", "p1", "first", fill) is True
            assert await set_if_new(redis, "ifnew:h", "p1", "second", fill) is False
            assert await redis.hgetall("ifnew:h") == {"p1": "first"}
            assert await redis.zrange("ifnew:z", 0, -1, withscores=True) == [("a", 1.5)]
            [(_, fields)] = await redis.xrange("ifnew:s")
            assert fields == {"event": "{\"x\": \"Ngập sâu\"}"}
            assert await redis.hget("ifnew:n", "count") == "2"
            assert await set_if_new(redis, "ifnew:h", "p2", "x", lambda pipe: pipe.execute_command(
                "OBJECT ENCODING", "ifnew:h")) is True  # a two-word name runs as two words
            with pytest.raises(ValueError, match="cannot run EVALSHA"):
                await set_if_new(redis, "ifnew:h", "p3", "x", lambda pipe: pipe.evalsha(
                    "0" * 40, 0))
            assert await redis.hkeys("ifnew:h") == ["p1", "p2"]  # refused: nothing written
            # the writes queued to be made either way are made with a new field and
            # without one, after those made only with a new one (none for p1 again)
            await redis.delete("ifnew:l")

            def always(pipe: Pipeline) -> None:
                pipe.rpush("ifnew:l", "done")
                pipe.hdel("ifnew:n", "count")

            for field in ("p4", "p1"):
                await redis.hset("ifnew:n", "count", "7")
                await set_if_new(redis, "ifnew:h", field, "y", fill, always)
                assert not await redis.hexists("ifnew:n", "count")  # deleted after the fill
            assert await redis.lrange("ifnew:l", 0, -1) == ["done", "done"]
            assert await redis.hget("ifnew:h", "p1") == "first"
            assert await redis.zcard("ifnew:z") == 1 and await redis.xlen("ifnew:s") == 2
        finally:
            await redis.aclose()

    asyncio.run(scenario())
