"""What every `loa` command shares: consoles, settings, errors in plain words, Redis."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console

from coordinator.city import City, load_city
from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.migrations import CURRENT
from coordinator.migrations.version import read_layout, stamp
from coordinator.settings import Settings, load_settings
from coordinator.state import Redis, redis_problem, run_with_redis

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def env_settings() -> Settings:
    """Settings from the environment, completed from a running `loa up`."""
    return load_settings().with_running_stack()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error in plain words and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def with_redis(work: Callable[[Redis, Keys, Settings], Awaitable[T]],
               stamp_fresh: bool = True) -> T:
    """Run `work` with a Redis connection; exit in plain words when Redis is unreachable or
    `work` raises a LoaError (its message is the error shown). An empty Redis is stamped
    with this Loa's layout first (unless not `stamp_fresh`: `loa migrate` decides itself),
    so what a command writes there (subscribers, tokens) is not taken for data of a layout
    before versions were kept."""
    settings = env_settings()
    if not settings.redis_url:
        raise fail("no Redis: set LOA_REDIS_URL or start Loa with `make up` (`loa doctor` helps)")

    async def run(redis: Redis) -> T:
        keys = Keys(settings.redis_prefix)
        if stamp_fresh and (await read_layout(redis, keys)).version is None:
            await stamp(redis, keys, CURRENT, only_if_absent=True)
        return await work(redis, keys, settings)

    try:
        return run_with_redis(settings.redis_url, run)
    except (OSError, RedisConnectionError, RedisTimeoutError) as exc:
        raise fail(redis_problem(settings.redis_url, exc)) from exc
    except LoaError as exc:
        raise fail(str(exc)) from exc


def print_json(data: Any) -> None:
    """Print JSON (UTF-8 kept)."""
    out.print_json(json.dumps(data, ensure_ascii=False, default=str))




def city_or_fail(settings: Settings) -> City:
    """The city from config/, or exit naming what is wrong."""
    try:
        return load_city(settings.config_dir, settings.area_map)
    except LoaError as exc:
        raise fail(str(exc)) from exc

