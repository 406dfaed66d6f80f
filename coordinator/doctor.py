"""`loa doctor`: check a setup, step by step, and say in plain words what is wrong."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console

from coordinator.broker import missing_topics
from coordinator.city import load_city
from coordinator.errors import BrokerUnavailable, LoaError
from coordinator.keys import Keys
from coordinator.migrations import CURRENT
from coordinator.migrations.version import LayoutError, advice, read_layout
from coordinator.playbooks.loader import load_playbooks
from coordinator.settings import Settings
from coordinator.state import Redis, redacted, redis_problem, run_with_redis

Check = Callable[[Settings], tuple[bool, str]]


def _python(settings: Settings) -> tuple[bool, str]:
    ok = sys.version_info >= (3, 11)
    return ok, f"Python {sys.version.split()[0]}" + ("" if ok else ": Loa needs 3.11 or newer")


def _config(settings: Settings) -> tuple[bool, str]:
    try:
        city = load_city(settings.config_dir)
    except LoaError as exc:
        return False, f"config/ does not load:\n{exc}"
    return True, (f"config: {len(city.areas)} areas, {len(city.departments)} departments, "
                  f"{len(city.people)} people")


def _playbooks(settings: Settings) -> tuple[bool, str]:
    try:
        playbooks = load_playbooks(settings.playbooks_dir, load_city(settings.config_dir))
    except LoaError as exc:
        return False, f"playbooks do not validate (run `loa playbooks validate`):\n{exc}"
    return True, f"playbooks: {len(playbooks)} valid ({', '.join(sorted(playbooks))})"


def _redis(settings: Settings) -> tuple[bool, str]:
    if not settings.redis_url:
        found = shutil.which("redis-server")
        return bool(found), ("Redis: no LOA_REDIS_URL and no `loa up` running; `loa up` will "
                             f"start {found}" if found else
                             "Redis: no LOA_REDIS_URL, and redis-server is not installed "
                             "(apt-get install redis-server)")

    async def ping(redis: Redis) -> tuple[bool, str]:
        await redis.ping()
        workers = [k async for k in redis.scan_iter(Keys(settings.redis_prefix)
                                                    .worker_heartbeats())]
        where = redacted(settings.redis_url or "")
        if not workers:
            return False, (f"Redis at {where} answers, but no worker is alive: "
                           "reports will wait in the outbox (start `loa worker`)")
        return True, f"Redis at {where} answers; {len(workers)} worker(s) alive"

    try:
        return run_with_redis(settings.redis_url, ping)
    except (OSError, RedisConnectionError, RedisTimeoutError) as exc:
        return False, redis_problem(settings.redis_url, exc)


def _layout(settings: Settings) -> tuple[bool, str]:
    """The Redis layout's version against this Loa's (`loa migrate` changes it)."""
    if not settings.redis_url:
        return True, (f"Redis layout: version {CURRENT} (`loa up` stamps or migrates its "
                      "embedded Redis)")

    try:
        layout = run_with_redis(settings.redis_url,
                                lambda redis: read_layout(redis, Keys(settings.redis_prefix)))
    except LayoutError as exc:
        return False, str(exc)
    except (OSError, RedisConnectionError, RedisTimeoutError):
        return False, "Redis layout: not read (Redis does not answer: see above)"
    problem = advice(layout, CURRENT)
    return not problem, problem[:1].upper() + problem[1:] if problem else layout.describe(CURRENT)


def _broker(settings: Settings) -> tuple[bool, str]:
    if not settings.kafka_url:
        return True, "broker: no LOA_KAFKA_URL and no `loa up` running; `loa up` starts Tansu"
    try:
        missing = asyncio.run(missing_topics(settings, timeout_s=5))
    except BrokerUnavailable as exc:
        return False, f"broker does not answer: {exc}"
    if missing:
        return False, (f"broker at {settings.kafka_url} answers but lacks topics "
                       f"{', '.join(missing)} (a worker creates them when it starts)")
    return True, f"broker at {settings.kafka_url} answers; every topic exists"


CHECKS: list[Check] = [_python, _config, _playbooks, _redis, _layout, _broker]


def run_doctor(settings: Settings, out: Console) -> int:
    """Print each check; 0 when all pass, 1 otherwise."""
    failed = 0
    for check in CHECKS:
        ok, message = check(settings)
        failed += not ok
        out.print(("[green]✔[/] " if ok else "[red]✘[/] ") + message, highlight=False)
    out.print("all good" if not failed else f"{failed} problem(s) found")
    return 1 if failed else 0
