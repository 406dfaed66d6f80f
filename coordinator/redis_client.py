"""The connection to Redis: redis-py's asyncio client, with a pool that hands out an idle
connection at once, commands packed by hiredis, and one watchdog per pool in place of a
timeout around every command. Every Redis command of every process goes through here."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator import observability as obs

log = obs.get_logger("redis")
MAX_CONNECTIONS = 64
"""Connections a process opens to Redis at most."""
COMMAND_TIMEOUT_S = 5.0
"""A command (its write, then each reply) that takes longer fails with redis-py's
TimeoutError, as redis-py's own default socket timeout had it. A blocking command
(XREAD BLOCK, BLPOP) must ask for less."""
WATCH_EVERY_S = 1.0
"""How often a pool's watchdog looks at its connections in use: a command stuck on a Redis
that stopped answering fails between COMMAND_TIMEOUT_S and that plus this."""


def connect(url: str) -> Any:  # redis-py's stubs type replies as bytes | str: see state.Redis
    """A Redis client that answers str (not bytes). The URL carries everything: a password
    (`redis://:PASSWORD@host:port/0`, or `user:PASSWORD@` with ACLs), TLS (`rediss://`) and
    the CA that signed the server's certificate (`?ssl_ca_certs=PATH`, which
    LOA_REDIS_CA_FILE adds)."""
    # A blocking pool: more commands at once than connections wait their turn (a fan-out has
    # a hundred deliveries in flight) instead of failing with "Too many connections".
    # No socket timeout: redis-py would wrap every write and every read in an asyncio
    # timeout (a fifth of a command's CPU); the pool's watchdog keeps the same promise. A
    # `socket_timeout` in the URL still applies, as redis-py's.
    pool = _QuickPool.from_url(url, decode_responses=True, max_connections=MAX_CONNECTIONS,
                               timeout=30, socket_timeout=None,
                               socket_connect_timeout=COMMAND_TIMEOUT_S)
    pool.connection_class = _OURS.get(pool.connection_class, pool.connection_class)
    return _Redis.from_pool(pool)  # closing the client closes its pool


class _Redis(aioredis.Redis):
    """redis-py's client, whose pipelines are :class:`_Pipeline`."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None
                 ) -> _Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction,
                         shard_hint)


class _Pipeline(aioredis.client.Pipeline):
    """redis-py's pipeline, less costs every transaction paid for what Loa never does (a
    report's path runs about nine, a fan-out's batch two): giving its connection back
    through a task (`asyncio.shield`), looking through its commands for HIMPORT SETs whose
    fieldsets it would have to declare first, and two layers of calls around each QUEUED
    reply, which has no callback to run. Each is redis-py's own path whenever it matters:
    a pipeline still watching (which sends UNWATCH), a pool that cannot take its
    connection back at once, a client that declared a fieldset."""

    async def reset(self) -> None:  # type: ignore[override]  # redis-py's stubs: RESET
        connection = self.connection
        pool = self.connection_pool if isinstance(self.connection_pool, _QuickPool) else None
        if self.watching or (connection is not None and not (
                pool is not None and pool.may_take_back_now(connection))):
            await super().reset()  # type: ignore[no-untyped-call]
            return
        # Cleared first, as redis-py clears it; then the connection goes back to the pool
        # without a suspension point in between: no cancellation can leave it half given
        # back, which is what the shield was for.
        self.command_stack = []
        self.scripts = set()
        self.explicit_transaction = False
        if connection is not None and pool is not None:  # none: given back by its execute
            self.connection = None
            pool.take_back(connection)

    async def parse_response(self, connection: Any, command_name: str | bytes,
                             **options: Any) -> Any:
        if command_name == "_":  # a transaction's MULTI, QUEUED and EXEC: no callback
            return await connection.read_response()
        return await super().parse_response(connection, command_name, **options)

    async def _himport_prepare_pipeline(self, conn: Any, commands: Any) -> None:
        registry = getattr(conn, "himport_registry", None)
        if registry is not None and registry.revision:  # a fieldset was ever declared
            await super()._himport_prepare_pipeline(conn, commands)  # type: ignore[no-untyped-call]


class _QuickPool(aioredis.BlockingConnectionPool):
    """A blocking pool that hands out an idle connection, and takes one back, at once while
    nobody waits for one: without the condition, the timeout and the pool's metrics events
    (which Loa does not collect) that redis-py's pool goes through for every command, about
    15 of the 80 µs of CPU a command costs this client. A command that finds no idle
    connection, or a connection given back while someone waits, takes redis-py's path.
    The first command in an event loop starts the pool's watchdog there."""

    # The watchdog is a timer callback of the loop, not a task: a stopping worker (mode)
    # waits up to a second for every task to end, and this one never would.
    _watch_loop: asyncio.AbstractEventLoop | None = None
    _watch: asyncio.TimerHandle | None = None

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any
                             ) -> AbstractConnection:
        loop = asyncio.get_running_loop()
        if self._watch_loop is not loop:  # the first command in this loop
            if self._watch is not None:  # another loop's: one watchdog a pool
                self._watch.cancel()
            self._watch_loop = loop
            self._watch = loop.call_later(WATCH_EVERY_S, _watch_over, weakref.ref(self), loop)
        if not self._available_connections or self._busy():
            connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
            return connection
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        # One to reconnect first is taken back by redis-py (it awaits in between, and wakes
        # a waiter after).
        if self.may_take_back_now(connection):
            self.take_back(connection)
        else:
            await super().release(connection)

    def may_take_back_now(self, connection: AbstractConnection) -> bool:
        """Whether :meth:`take_back` may take `connection` back (else: redis-py's path)."""
        return not (self._busy() or connection.should_reconnect())  # type: ignore[no-untyped-call]

    def take_back(self, connection: AbstractConnection) -> None:
        """Take `connection` back at once, without awaiting (:meth:`may_take_back_now`)."""
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if self._watch is not None:  # a command after this starts another one
            self._watch.cancel()
        self._watch = self._watch_loop = None
        await super().disconnect(inuse_connections)

    def _busy(self) -> bool:
        """Someone waits for a connection, the pool is being rewritten (maintenance), or
        its connections re-authenticate as they are taken back (a credential provider,
        which Loa does not use): redis-py's path then."""
        return bool(self._in_maintenance or self._condition._waiters
                    or self.connection_kwargs.get("credential_provider"))


def _watch_over(pool: weakref.ref[_QuickPool], loop: asyncio.AbstractEventLoop) -> None:
    """End the commands of `pool` that have waited longer than COMMAND_TIMEOUT_S, and come
    back in WATCH_EVERY_S; stops with the pool, or when the pool has moved to another
    loop or was closed."""
    watched = pool()
    if watched is None or watched._watch_loop is not loop:
        return
    # Its next round first: a callback that raised would not come back, and the pool
    # would have no time limit left at all.
    watched._watch = loop.call_later(WATCH_EVERY_S, _watch_over, pool, loop)
    overdue = time.monotonic() - COMMAND_TIMEOUT_S
    for connection in list(watched._in_use_connections):
        if isinstance(connection, _Watched) and connection.busy_since is not None \
                and connection.busy_since < overdue:
            try:
                connection.time_out()
            except Exception as exc:  # the others are still looked at, and next round
                log.error("Redis watchdog could not cut a command", error=repr(exc))


class _Watched(AbstractConnection):
    """A connection whose command, while it writes or waits for a reply, is timed by its
    pool's watchdog (`busy_since`), not by an asyncio timeout of its own. One the watchdog
    ends fails as redis-py's timeout did: TimeoutError, the connection closed.

    A command is timed from its write until its reply is read (each reply of a pipeline
    from the end of the one before). What a write or a read does inside another (a
    reconnection's handshake, a health check) counts in the outer one's time: `_depth`."""

    busy_since: float | None = None
    timed_out = False  # the watchdog cut this connection; its command has not failed yet
    _depth = 0

    def time_out(self) -> None:
        """Called by the watchdog: cut the connection; the command waiting on it fails."""
        writer = self._writer
        if writer is not None and not writer.transport.is_closing():
            self.timed_out = True
            writer.transport.abort()

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if not self.is_connected:
            self.timed_out = False  # a new connection: nothing of the old one is pending
        await super().connect_check_health(check_health, retry_socket_connect)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        outer = self._depth == 0
        if outer:  # a new command: timed from now until its reply is read
            self.busy_since, self.timed_out = time.monotonic(), False
        self._depth += 1
        try:
            await super().send_packed_command(command, check_health)
        except BaseException as exc:
            if outer:
                self.busy_since = None
            if isinstance(exc, Exception) and self.timed_out:
                raise self._timeout() from exc
            raise
        finally:
            self._depth -= 1

    async def read_response(self, disable_decoding: bool = False, timeout: float | None = None,
                            *, disconnect_on_error: bool = True, push_request: bool | None = False
                            ) -> Any:
        # A read given its own timeout (a pubsub's wait) is timed by redis-py, as it asks.
        outer = self._depth == 0 and timeout is None
        if outer and self.busy_since is None:
            self.busy_since = time.monotonic()
        self._depth += 1
        try:
            return await super().read_response(
                disable_decoding=disable_decoding, timeout=timeout,
                disconnect_on_error=disconnect_on_error, push_request=push_request)
        except Exception as exc:
            if self.timed_out:
                raise self._timeout() from exc
            raise
        finally:
            self._depth -= 1
            if outer:
                self.busy_since = None

    async def disconnect(self, nowait: bool = False, error: Exception | None = None,
                         failure_count: int | None = None, health_check_failed: bool = False
                         ) -> None:
        if self._depth == 0:  # not a command's own failure: nothing of it is pending
            self.busy_since = None
        await super().disconnect(nowait, error, failure_count, health_check_failed)

    def _timeout(self) -> Exception:
        """The error of a command the watchdog cut off (said once): redis-py's."""
        self.timed_out = False
        return RedisTimeoutError(f"Timeout: no answer from Redis in {COMMAND_TIMEOUT_S:g} s")


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis, in C, as redis-py's synchronous client does and its
    asyncio one does not: the same bytes (a unit test holds the two side by side), ten
    times faster. A fan-out and an incident's plan send thousands of commands a second,
    and redis-py's pure-Python packing took 6 % of the worker's time in a fan-out. Strings
    are encoded as UTF-8, our only encoding; what hiredis does not take (None, a bool, a
    bytearray) is left to redis-py, which packs or refuses it as always."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (isinstance(first, bytes)
                                                          and b" " in first):
            return super().pack_command(*args)  # "CLIENT SETNAME": split by redis-py
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # None, a bool, a bytearray ...: as redis-py packs or refuses it
            return super().pack_command(*args)


class _Connection(_Watched, _HiredisPacking, aioredis.Connection):
    pass


class _SSLConnection(_Watched, _HiredisPacking, aioredis.SSLConnection):
    pass


class _UnixConnection(_Watched, _HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


_OURS: dict[type, type] = {
    aioredis.Connection: _Connection, aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection}
