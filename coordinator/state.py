"""Redis access: compare-and-set transactions, scripts, pipelines and the audit trail (the
connection itself: ``coordinator.redis_client``).

Every state change goes through :func:`transact`: WATCH the keys the decision
depends on, read, decide, write in MULTI/EXEC; a concurrent change retries.
A handler run twice reads the state the first run left and writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import AuthenticationError, NoScriptError, ResponseError, WatchError

from coordinator.errors import Contention
from coordinator.events import AuditEvent
from coordinator.keys import Keys
from coordinator.redis_client import connect as connect

T = TypeVar("T")
# redis-py's stubs ignore `decode_responses=True` (every reply is typed
# `bytes | str`, and pipeline methods are untyped); we type the client loosely
# at this one boundary instead of casting at every call.
Redis = Any
Pipeline = Any


class Script:
    """A Lua script called by its SHA1 (EVALSHA), so its text crosses the wire once per
    Redis server rather than with every call: a fan-out runs some of them hundreds of times
    a second. A Redis restarted since (its script cache empty) is given the text again."""

    _all: ClassVar[list[Script]] = []

    def __init__(self, script: str) -> None:
        self.script = script  # `script` and `sha`: what redis-py's pipeline loads by
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self.loaded = False  # as far as this process knows
        Script._all.append(self)

    async def __call__(self, redis: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run it now."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.script, len(keys), *keys, *args)  # caches it too

    def queue(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        """Queue it in a pipeline run by :func:`run_pipeline`, or in a transaction whose
        caller handles NoScriptError (:meth:`forget_loaded`). The first pipeline of the
        process makes sure the server has it (redis-py sends SCRIPT EXISTS, and LOAD if
        needed, before executing); later ones do not ask again."""
        if not self.loaded:
            pipe.scripts.add(self)
            self.loaded = True
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    @classmethod
    def forget_loaded(cls) -> None:
        """Redis answered NoScriptError (restarted since): the next pipeline that queues a
        script loads it again."""
        for script in cls._all:
            script.loaded = False


async def run_pipeline(redis: Redis, fill: Callable[[Pipeline], None]) -> list[Any]:
    """A pipeline (no transaction) that `fill` queues commands in, executed: one round trip.
    When Redis lost a script it calls (restarted since), every script is loaded again and
    the pipeline runs again, once, so `fill` queues only what may run twice."""
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            fill(pipe)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                Script.forget_loaded()
    raise AssertionError("unreachable")


# ARGV: the field, its value, where the writes made either way start, then each write as
# its word count and words (those made only when the field was new first).
_IF_NEW = Script("""
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local always = tonumber(ARGV[3])
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if new == 1 or i >= always then redis.call(unpack(ARGV, i + 1, i + n)) end
  i = i + n + 1
end
return new
""")


def _recorded(redis: Redis, fill: Callable[[Pipeline], None]) -> list[Any]:
    """The writes `fill` queues, as `_IF_NEW` takes them. Raises ValueError for one a
    script cannot run (a script, or a transaction's own)."""
    args: list[Any] = []
    recorder = redis.pipeline(transaction=False)  # records, never executed (holds no connection)
    fill(recorder)
    for name, *rest in (command for command, _ in recorder.command_stack):
        words = str(name).split()  # redis-py names some commands in two words
        if words[0].upper() in _NOT_IN_A_SCRIPT:
            raise ValueError(f"set_if_new cannot run {name} in its script")
        args += [len(words) + len(rest), *words, *rest]
    return args


async def set_if_new(redis: Redis, key: str, field: str, value: str,
                     fill: Callable[[Pipeline], None],
                     always: Callable[[Pipeline], None] | None = None) -> bool:
    """Set a hash's field unless it is there, and only then also run the writes `fill`
    queues (as it would inside MULTI); the writes `always` queues run either way. All at
    once and in one round trip: a compare-and-set without WATCH's three. True when the
    field was new. The writes' keys are not declared to the script, which a single Redis
    (ours) does not need. Raises ValueError for a queued command a script cannot run (a
    script, or a transaction's own)."""
    if_new = _recorded(redis, fill)
    either_way = _recorded(redis, always) if always is not None else []
    args = [field, value, 4 + len(if_new), *if_new, *either_way]
    return bool(await _IF_NEW(redis, [key], args))


# KEYS: the key; ARGV: the value it must still hold, and milliseconds left (0: delete).
_IF_STILL = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
""")


async def delete_if_still(redis: Redis, key: str, value: str, after_ms: int = 0) -> bool:
    """Delete a string key (or, with `after_ms`, let it expire that much later) only while
    it still holds `value` (a lock still its holder's, a heartbeat still this process's):
    one script, so a newer value set in between is kept. True when it was done."""
    return bool(await _IF_STILL(redis, [key], [value, str(after_ms)]))


_NOT_IN_A_SCRIPT = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO",
                              "SCRIPT", "FUNCTION", "MULTI", "EXEC", "WATCH", "UNWATCH",
                              "DISCARD", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR",
                              "BLPOP", "BRPOP", "BLMOVE", "BZPOPMIN", "BZPOPMAX"})


def run_with_redis(url: str, work: Callable[[Redis], Awaitable[T]]) -> T:
    """Run `work` on a connection of its own, closed afterwards, in a new event loop: for a
    command or a start-up check that is not itself async. Raises what `work` raises, and
    OSError / redis ConnectionError when Redis does not answer."""
    async def run() -> T:
        redis = connect(url)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def redacted(url: str) -> str:
    """A Redis URL fit to print or log: any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_problem(url: str, exc: Exception) -> str:
    """What went wrong reaching Redis, in plain words (the password never shown)."""
    where = f"Redis at {redacted(url)}"
    if isinstance(exc, AuthenticationError):
        return (f"{where} refused to let us in ({exc}): the password in LOA_REDIS_URL is "
                "wrong or missing (redis://:PASSWORD@host:port/0)")
    return f"{where} does not answer: {exc}"


async def transact(
    redis: Redis, watch: list[str], body: Callable[[Pipeline], Awaitable[T]], attempts: int = 50,
    replies: list[Any] | None = None,
) -> T:
    """Run `body` as a compare-and-set: it reads (immediate mode), calls
    ``pipe.multi()``, queues writes and returns its result; retried on a conflict. The
    writes' replies go to `replies`, when given. Raises Contention when the keys keep
    changing under it. With no `watch`, the body watches what it reads itself, with
    :func:`watch_and_read`."""
    for _ in range(attempts):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                if watch:
                    await pipe.watch(*watch)
                result = await body(pipe)
                if not (watch or pipe.watching):  # it would write unguarded
                    raise ValueError("transact: the body watched nothing (watch_and_read)")
                if not pipe.explicit_transaction:
                    pipe.multi()
                done = await pipe.execute()
                if replies is not None:
                    replies[:] = done
                return result
            except WatchError:
                continue
    raise Contention(f"gave up after {attempts} conflicting attempts on "
                     f"{watch or 'what it read'}")


async def watch_and_read(pipe: Pipeline, watch: Sequence[str], *reads: tuple[Any, ...]
                         ) -> list[Any]:
    """Inside :func:`transact`'s body, before MULTI: WATCH `watch` and run `reads` (each a
    command and its arguments, e.g. ``("HGETALL", key)``) in one round trip, rather than
    one each as redis-py's immediate mode sends them; their replies, as redis-py parses
    them. A round trip costs this client more CPU than the commands in it (a report's
    intake and its plan made eight). `watch` may be empty only once something is watched
    (reads whose keys come from the first ones). A connection lost while something is
    watched reruns the transaction (a WatchError: a new connection watches nothing), as
    redis-py does; one lost before fails with redis-py's error (this client's connections
    retry no command). A reply that is an error raises it, and the connection, owing
    replies still, is not used again."""
    if not (watch or pipe.watching):
        raise ValueError("watch_and_read: nothing is watched (a compare-and-set with no keys)")
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = await pipe.connection_pool.get_connection()
    commands = [("WATCH", *watch), *reads] if watch else list(reads)

    async def dropped() -> None:  # what it watched goes with it: reset() need not UNWATCH
        await conn.disconnect()
        pipe.watching = False

    async def send_and_read() -> list[Any]:
        await conn.send_packed_command(conn.pack_commands(commands))
        try:
            return [await pipe.parse_response(conn, command[0]) for command in commands]
        except ResponseError:
            await dropped()
            raise

    async def lost(error: Exception) -> None:
        watching = pipe.watching  # (as redis-py asks it: at the failure)
        await dropped()
        if watching:
            raise WatchError(f"the connection was lost while watching: {error}")

    replies: list[Any] = await conn.retry.call_with_retry(send_and_read, lost)
    return replies[1:] if watch else replies


def queue_audit(pipe: Pipeline, keys: Keys, event: AuditEvent) -> None:
    """Append to the audit stream and, for an incident, to its timeline (inside MULTI)."""
    data = event.model_dump_json()
    # No MAXLEN, on purpose: the stream is the record (see Keys.audit for why, and who trims)
    pipe.xadd(keys.audit(), {"event": data})
    if event.incident_id:
        pipe.rpush(keys.timeline(event.incident_id), data)


async def record_audit(redis: Redis, keys: Keys, event: AuditEvent) -> None:
    """Append one audit event on its own (see :func:`queue_audit`)."""
    async with redis.pipeline(transaction=True) as pipe:
        queue_audit(pipe, keys, event)
        await pipe.execute()


async def read_json_list(redis: Redis, key: str) -> list[dict[str, Any]]:
    """A list of JSON entries, decoded."""
    return [json.loads(item) for item in await redis.lrange(key, 0, -1)]
