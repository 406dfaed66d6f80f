"""Layering rules, checked on the source: web routes only ask (no Redis write under
coordinator/web/), and no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "coordinator" / "web"
REDIS_WRITES = frozenset({
    "hset", "hdel", "sadd", "srem", "set", "delete", "zadd", "zrem", "incr", "incrby",
    "expire", "xadd", "publish", "rpush", "lpush", "getdel", "pipeline", "transact",
    # and their close kin
    "decr", "decrby", "hincrby", "setex", "unlink",
})
MAX_LINES = 400
# What web may call on a Redis client itself: its life (close) and the health check.
CONNECTION_CALLS = frozenset({"ping", "aclose"})


def redis_writes(source: str, filename: str) -> list[str]:
    """`filename:line method` for every call of a Redis write method in `source` (an
    attribute call on anything, or a bare call of `transact`)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (func.attr if isinstance(func, ast.Attribute)
                else func.id if isinstance(func, ast.Name) else "")
        if name in REDIS_WRITES and (isinstance(func, ast.Attribute) or name == "transact"):
            found.append((node.lineno, f"{filename}:{node.lineno} {name}"))
    return [hit for _, hit in sorted(found)]


def direct_redis_calls(source: str, filename: str) -> list[str]:
    """`filename:line method` for every command called on a `.redis` client itself (reads
    included): web asks through query and domain functions, which take the client."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "redis"
                and node.func.attr not in CONNECTION_CALLS):
            found.append((node.lineno, f"{filename}:{node.lineno} {node.func.attr}"))
    return [hit for _, hit in sorted(found)]


def test_the_read_rule_finds_commands_on_the_client_and_passes_queries() -> None:
    """direct_redis_calls reports a read called on st.redis, not a query taking st.redis."""
    source = ("async def f(st, self):\n"
              "    await queries.incident_row(st.redis, st.keys, 'INC-1')\n"
              "    await st.redis.hget('k', 'f')\n"
              "    await self.redis.zrevrange('z', 0, 1)\n"
              "    await st.redis.ping()\n")
    assert direct_redis_calls(source, "x.py") == ["x.py:3 hget", "x.py:4 zrevrange"]


def test_web_routes_read_redis_only_through_queries() -> None:
    """Under coordinator/web/ no Redis command is called on the client itself."""
    found = [hit for path in sorted(WEB.rglob("*.py"))
             for hit in direct_redis_calls(path.read_text(encoding="utf-8"),
                                           str(path.relative_to(ROOT)))]
    assert not found, "Redis commands under coordinator/web/:\n" + "\n".join(found)


def test_the_rule_finds_writes_and_passes_reads() -> None:
    """redis_writes reports each write call by file and line and ignores a read."""
    source = ("async def f(st, pipe):\n"
              "    await st.redis.get('k')\n"
              "    await st.redis.set('k', 1)\n"
              "    pipe.hset('h', mapping={})\n"
              "    await transact(st.redis, [], f)\n")
    assert redis_writes(source, "x.py") == ["x.py:3 set", "x.py:4 hset", "x.py:5 transact"]


def test_web_routes_write_nothing_to_redis() -> None:
    """Routes parse, authorize, call one domain function and render: a write under
    coordinator/web/ belongs in a domain module."""
    found = [hit for path in sorted(WEB.rglob("*.py"))
             for hit in redis_writes(path.read_text(encoding="utf-8"),
                                     str(path.relative_to(ROOT)))]
    assert not found, "Redis writes under coordinator/web/:\n" + "\n".join(found)


def test_no_module_is_over_400_lines() -> None:
    """No module under coordinator/, channels/ or sandbox/ has more than 400 lines."""
    packages = [ROOT / name for name in ("coordinator", "channels", "sandbox")
                if (ROOT / name).is_dir()]
    too_long = [f"{path.relative_to(ROOT)}: {lines} lines"
                for package in packages for path in sorted(package.rglob("*.py"))
                if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not too_long, "over 400 lines:\n" + "\n".join(too_long)
