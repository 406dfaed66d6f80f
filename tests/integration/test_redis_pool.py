"""The Redis pool's quick path (an idle connection taken without redis-py's waiting
machinery) keeps the pool's promises: at most MAX_CONNECTIONS, and a command that finds
none idle waits its turn and is served (a private redis-server); and an embedded Redis is
reached over its Unix socket where it has one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator import redis_client, state
from coordinator.embedded import SOCKET_PATH_MOST, Service, start_redis, unix_sockets_work

pytestmark = pytest.mark.integration


async def test_more_commands_than_connections_all_get_their_answer(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 commands at once on 4 connections; then 4 held by blocking pops, and a fifth
    command waits for one of them and is served."""
    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS", 4)
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


async def test_a_redis_that_stops_answering_times_a_command_out_and_then_serves_again(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """No asyncio timeout around each command: the pool's watchdog cuts a command that has
    waited past COMMAND_TIMEOUT_S (the server frozen with SIGSTOP), which fails with
    redis-py's TimeoutError; the connection is made again for the next one. A command
    shorter than the limit, and one that takes longer while the server works, are left
    alone."""
    monkeypatch.setattr(redis_client, "COMMAND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(redis_client, "WATCH_EVERY_S", 0.05)
    redis = state.connect(redis_server.url)
    await redis.set("pool:k", "v")
    # a blocking read shorter than the limit is not cut
    assert await redis.blpop(["pool:nothing"], timeout=0.3) is None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError, match=r"no answer from Redis in 0\.5 s"):
            await asyncio.wait_for(redis.get("pool:k"), 10)  # not for ever, if it fails
        waited = time.monotonic() - began
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert 0.5 <= waited < 2, waited
    assert await redis.get("pool:k") == "v"
    assert not redis.connection_pool._in_use_connections
    await redis.aclose()
    assert redis.connection_pool._watch is None  # stopped; a command would start one


async def test_an_error_is_what_redis_said_and_a_cut_pipeline_times_out(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that is no timeout keeps its type and its cause, also on a connection the
    watchdog cut before (made again); a pipeline cut off mid-way times out."""
    monkeypatch.setattr(redis_client, "COMMAND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(redis_client, "WATCH_EVERY_S", 0.05)
    redis = state.connect(redis_server.url)
    await redis.set("pool:s", "text")
    with pytest.raises(ResponseError, match="WRONGTYPE") as wrong:
        await redis.hget("pool:s", "f")
    assert wrong.value.__cause__ is None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set("pool:p", "1").incr("pool:n")
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(pipe.execute(), 10)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    for _ in range(3):  # the cut connection, made again, says what Redis says
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await redis.hget("pool:s", "f")
    assert await redis.get("pool:s") == "text"
    await redis.aclose()
    assert redis.connection_pool._watch is None


async def test_the_watchdog_goes_on_after_it_failed_to_cut_a_command(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut that raises (once) is logged, and the next round cuts the command: the pool is
    never left without its time limit."""
    monkeypatch.setattr(redis_client, "COMMAND_TIMEOUT_S", 0.3)
    monkeypatch.setattr(redis_client, "WATCH_EVERY_S", 0.05)
    cut = redis_client._Watched.time_out
    tries: list[int] = []

    def flaky(connection: redis_client._Watched) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("transport in an odd state")
        cut(connection)

    monkeypatch.setattr(redis_client._Watched, "time_out", flaky)
    redis = state.connect(redis_server.url)
    await redis.set("pool:w", "v")
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(redis.get("pool:w"), 10)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert len(tries) == 2
    assert [line["event"] for line in logs] == ["Redis watchdog could not cut a command"]
    await redis.aclose()
    assert await redis.get("pool:w") == "v"  # closed, then used again in this loop
    pool = redis.connection_pool
    assert pool._watch is not None and pool._watch_loop is asyncio.get_running_loop()
    await redis.aclose()


async def test_watch_and_read_watches_and_reads_in_one_round_trip(
        redis_server: Service) -> None:
    """The reads come back parsed as redis-py parses them; a write to a watched key after
    them makes the transaction run again, and the second run sees it; the WATCH and the
    reads go in one round trip (the client's sends counted)."""
    redis = state.connect(redis_server.url)
    await redis.hset("war:report", mapping={"incident": "INC-1", "opened": "1"})
    await redis.set("war:open", "INC-1")
    runs: list[tuple[dict[str, str], str | None, str | None]] = []
    sends = 0

    async def body(pipe: state.Pipeline) -> str:
        nonlocal sends
        connection = pipe.connection or await pipe.connection_pool.get_connection()
        pipe.connection = connection
        send = connection.send_packed_command

        async def counted(command: object, check_health: bool = True) -> None:
            nonlocal sends
            sends += 1
            await send(command, check_health)

        connection.send_packed_command = counted
        try:
            record, opened, missing = await state.watch_and_read(
                pipe, ["war:report", "war:open"], ("HGETALL", "war:report"),
                ("GET", "war:open"), ("GET", "war:none"))
        finally:
            del connection.send_packed_command
        runs.append((record, opened, missing))
        if len(runs) == 1:  # someone else moves the open incident on meanwhile
            await redis.set("war:open", "INC-2")
        pipe.multi()
        pipe.set("war:seen", opened or "")
        return str(opened)

    assert await state.transact(redis, [], body) == "INC-2"
    assert runs == [({"incident": "INC-1", "opened": "1"}, "INC-1", None),
                    ({"incident": "INC-1", "opened": "1"}, "INC-2", None)]
    assert sends == 2  # one send a run: the WATCH and the three reads together
    assert await redis.get("war:seen") == "INC-2"
    await redis.aclose()


async def test_watch_and_read_with_nothing_to_watch_only_reads(
        redis_server: Service) -> None:
    """Reads whose keys come from the first ones (a request's draft and incident) go in a
    second round trip and watch nothing more: a write to them does not rerun the body."""
    redis = state.connect(redis_server.url)
    await redis.hset("war:request", mapping={"draft": "war:draft"})
    await redis.set("war:draft", "v1")
    runs = 0

    async def body(pipe: state.Pipeline) -> list[str]:
        nonlocal runs
        runs += 1
        (request,) = await state.watch_and_read(pipe, ["war:request"],
                                                ("HGETALL", "war:request"))
        draft, none = await state.watch_and_read(pipe, [], ("GET", request["draft"]),
                                                 ("GET", "war:nothing"))
        await redis.set("war:draft", "v2")  # not watched
        pipe.multi()
        pipe.set("war:copied", draft)
        return [draft, str(none)]

    assert await state.transact(redis, [], body) == ["v1", "None"]
    assert runs == 1 and await redis.get("war:copied") == "v1"
    await redis.aclose()


async def test_watch_and_read_after_an_error_reply_or_a_lost_connection(
        redis_server: Service) -> None:
    """An error reply among the reads raises it; the connection that still owed replies is
    dropped, not used again, and the client goes on answering right. A connection lost
    before anything is watched fails as redis-py's own WATCH would (this client does not
    retry a command), and the client goes on answering; one lost while something is
    watched runs the transaction again (a new connection watches nothing). A body that
    watches nothing is refused rather than run unguarded."""
    redis = state.connect(redis_server.url)
    killer = state.connect(redis_server.url)
    await redis.set("war:string", "s")
    await redis.hset("war:h", mapping={"f": "v"})

    drops = 0

    async def wrong(pipe: state.Pipeline) -> None:
        nonlocal drops
        connection = pipe.connection = await pipe.connection_pool.get_connection()
        disconnect = connection.disconnect

        async def counted(*args: object, **kwargs: object) -> None:
            nonlocal drops
            drops += 1
            await disconnect(*args, **kwargs)

        connection.disconnect = counted
        try:
            await state.watch_and_read(pipe, ["war:string"], ("HGETALL", "war:string"),
                                       ("GET", "war:string"))
        finally:
            del connection.disconnect

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await state.transact(redis, [], wrong)
    assert drops == 1
    assert [await redis.get("war:string") for _ in range(3)] == ["s", "s", "s"]
    assert await redis.hgetall("war:h") == {"f": "v"}

    async def cut_first(pipe: state.Pipeline) -> None:
        pipe.connection = await pipe.connection_pool.get_connection()
        await killer.client_kill_filter(_id=await _client_id(pipe))
        await state.watch_and_read(pipe, ["war:h"], ("HGETALL", "war:h"))

    with pytest.raises(RedisConnectionError):
        await state.transact(redis, [], cut_first)
    assert await redis.hgetall("war:h") == {"f": "v"}

    runs = 0

    async def cut_watching(pipe: state.Pipeline) -> dict[str, str]:
        nonlocal runs
        runs += 1
        (first,) = await state.watch_and_read(pipe, ["war:h"], ("HGETALL", "war:h"))
        if runs == 1:  # lost while watching: the transaction runs again
            await killer.client_kill_filter(_id=await _client_id(pipe))
        (second,) = await state.watch_and_read(pipe, ["war:string"], ("GET", "war:string"))
        pipe.multi()
        pipe.set("war:done", str(runs))
        return {"h": first["f"], "s": second}

    assert await state.transact(redis, [], cut_watching) == {"h": "v", "s": "s"}
    assert runs == 2
    assert await redis.get("war:done") == "2"

    async def unguarded(pipe: state.Pipeline) -> None:
        pipe.multi()
        pipe.set("war:unguarded", "1")

    with pytest.raises(ValueError, match="watched nothing"):
        await state.transact(redis, [], unguarded)
    with pytest.raises(ValueError, match="nothing is watched"):
        await state.transact(redis, [], lambda pipe: state.watch_and_read(
            pipe, [], ("GET", "war:string")))
    assert await redis.get("war:unguarded") is None
    await killer.aclose()
    await redis.aclose()


async def test_a_transaction_answers_as_redis_py_and_gives_its_connection_back(
        redis_server: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loa's pipelines skip parts of redis-py's path (the shielded release, the HIMPORT
    scan, the layers around QUEUED replies): they answer as redis-py's own do, with
    replies through their callbacks, an error at EXEC and one at queuing, and a watched
    key changed; after each, the connection is back in the pool, watching nothing."""
    ours = state.connect(redis_server.url)
    theirs = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    assert type(ours.pipeline()) is not type(theirs.pipeline())
    their_reset = aioredis.client.Pipeline.reset
    slow = []  # pipelines reset by redis-py's own path (the connection given back by a task)

    async def counted_reset(pipe: Any) -> None:
        slow.append(pipe)
        await their_reset(pipe)

    monkeypatch.setattr(aioredis.client.Pipeline, "reset", counted_reset)

    async def run(redis: Any, build: Any, transaction: bool = True) -> Any:
        async with redis.pipeline(transaction=transaction) as pipe:
            build(pipe)
            try:
                return await pipe.execute()
            except Exception as exc:
                return type(exc), str(exc)

    await theirs.set("tx:s", "text")
    transactions = [
        lambda p: p.hset("tx:h", mapping={"a": "1"}).hgetall("tx:h").zadd("tx:z", {"m": 2})
        .zrange("tx:z", 0, -1, withscores=True).set("tx:k", "v").get("tx:k").delete("tx:k"),
        lambda p: p.set("tx:n", "1").incr("tx:s").incr("tx:n"),  # fails at EXEC
        lambda p: p.set("tx:n", "5").execute_command("SET", "tx:n"),  # refused at queuing
    ]
    for build in transactions:
        await theirs.delete("tx:h", "tx:z", "tx:n")
        expected = await run(theirs, build)
        await theirs.delete("tx:h", "tx:z", "tx:n")
        assert await run(ours, build) == expected
        assert not ours.connection_pool._in_use_connections
    assert await ours.get("tx:n") is None  # the refused transaction wrote nothing
    assert slow and all(type(pipe) is not type(ours.pipeline()) for pipe in slow)  # theirs
    slow.clear()
    for build in transactions:  # the same as plain pipelines (no MULTI)
        await theirs.delete("tx:h", "tx:z", "tx:n")
        expected = await run(theirs, build, transaction=False)
        await theirs.delete("tx:h", "tx:z", "tx:n")
        assert await run(ours, build, transaction=False) == expected
        assert not ours.connection_pool._in_use_connections
    assert slow and all(type(pipe) is not type(ours.pipeline()) for pipe in slow)

    async with ours.pipeline(transaction=True) as pipe:  # a watched key changed
        await pipe.watch("tx:w")
        await theirs.set("tx:w", "changed")
        pipe.multi()
        pipe.set("tx:w", "mine")
        with pytest.raises(WatchError):
            await pipe.execute()
    async with ours.pipeline(transaction=True) as pipe:  # left while watching: UNWATCH
        await pipe.watch("tx:w")
        watcher = pipe.connection
        slow.clear()
    assert len(slow) == 1  # redis-py's path, which sends it
    assert ours.connection_pool._available_connections == [watcher]
    await theirs.set("tx:w", "changed again")  # watched no more: the next one goes through
    async with ours.pipeline(transaction=True) as pipe:  # on the connection that watched
        assert await pipe.set("tx:w", "mine").execute() == [True]
    assert ours.connection_pool._available_connections == [watcher]
    assert await ours.get("tx:w") == "mine"
    await ours.aclose()
    await theirs.aclose()


async def _client_id(pipe: state.Pipeline) -> int:
    """The server's id of the connection a pipeline holds (asked on it, unwatched reads)."""
    connection = pipe.connection
    await connection.send_command("CLIENT", "ID")
    return int(await connection.read_response())


async def test_an_embedded_redis_answers_on_its_socket_with_its_password(
        tmp_path: Path) -> None:
    """The embedded Redis's socket URL carries the password (quoted) and reaches the same
    Redis as its TCP URL. A folder where no socket can be made, or whose path is too long
    for a socket's name, gets none: Redis runs over TCP alone, and the nearest URL is the
    TCP one."""
    service = start_redis(tmp_path / "r", password="p@ss w/rd:1", appendonly=False)
    try:
        assert service.local_url.startswith("unix://:p%40ss%20w%2Frd%3A1@/")
        over_socket = redis_client.connect(service.nearest_url)
        over_tcp = redis_client.connect(service.url)
        try:
            await over_socket.set("k", "v")
            assert await over_tcp.get("k") == "v"
            [mine] = [c for c in await over_socket.client_list() if "client" in c["cmd"]]
            assert "U" in mine["flags"]
        finally:
            await over_socket.aclose()
            await over_tcp.aclose()
    finally:
        service.stop()
    # A file system that makes no sockets (here /proc) is found out before Redis starts.
    assert unix_sockets_work(tmp_path) and not unix_sockets_work(Path("/proc"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s")]
    deep = tmp_path / ("d" * (SOCKET_PATH_MOST - len(str(tmp_path))))
    far = start_redis(deep, appendonly=False)
    try:
        assert (far.local_url, far.nearest_url) == ("", far.url)
        assert not (deep / "redis.sock").exists()
    finally:
        far.stop()
