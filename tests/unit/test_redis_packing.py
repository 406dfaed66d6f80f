"""Commands packed by hiredis are the bytes redis-py itself would send."""

from __future__ import annotations

import collections

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from coordinator.state import connect

COMMANDS = [
    ("SET", "k", "v"),
    ("HSET", "loa:delivery:STM-1:sms:7", "status", "sent", "at", "2026-12-05T07:00:00+00:00",
     "error", ""),
    ("XADD", "loa:audit", "MAXLEN", "~", 100_000, "*", "event", '{"x": "Ngập sâu ở Giảng Võ 🌊"}'),
    ("ZADD", "z", 1764921334.123456, "a", 0.1 + 0.2, "b", 1e20, "c", -3, "d"),
    ("SET", b"raw\x00bytes", memoryview(b"\xff\xfe")),
    ("CLIENT SETNAME", "worker-1"),
    (b"CLIENT SETNAME", "worker-1"),
    ("SET", "big", "x" * 100_000),
    ("SET", "k", bytearray(b"x")),  # redis-py takes it, hiredis does not
]


@pytest.mark.parametrize(("url", "kind"), [
    ("redis://127.0.0.1:1/0", aioredis.Connection),
    ("rediss://127.0.0.1:1/0", aioredis.SSLConnection),
    ("unix:///tmp/none.sock", aioredis.UnixDomainSocketConnection)])
def test_commands_are_packed_as_redis_py_packs_them(url: str, kind: type) -> None:
    ours = connect(url).connection_pool.connection_class()
    theirs = aioredis.Connection()
    assert isinstance(ours, kind)  # TLS stays TLS, a socket file a socket file
    assert type(ours) is not kind  # ... packed by hiredis
    for command in COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(
            theirs.pack_command(*command)), command
    assert b"".join(ours.pack_commands(COMMANDS)) == b"".join(theirs.pack_commands(COMMANDS))


def test_an_argument_redis_cannot_take_is_refused_as_redis_py_refuses_it() -> None:
    ours = connect("redis://127.0.0.1:1/0").connection_pool.connection_class()
    for bad in (None, True, ["a"]):
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", bad)
        with pytest.raises(DataError):
            aioredis.Connection().pack_command("SET", "k", bad)


def test_the_quick_pool_finds_the_parts_of_redis_py_it_reads() -> None:
    """The pool's quick path reads redis-py's and asyncio's own attributes: an upgrade that
    renames one fails here, not in production."""
    pool = connect("redis://127.0.0.1:1/0").connection_pool
    assert isinstance(pool._available_connections, list)
    assert isinstance(pool._in_use_connections, set)
    assert isinstance(pool._condition._waiters, collections.deque)  # type: ignore[attr-defined]
    assert pool._in_maintenance is False  # type: ignore[attr-defined]
    assert "credential_provider" not in pool.connection_kwargs
    assert pool.connection_class().should_reconnect() is False
