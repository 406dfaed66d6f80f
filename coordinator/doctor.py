"""`loa doctor`: check a setup, step by step, and say in plain words what is wrong."""

from __future__ import annotations

import asyncio
import math
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
from coordinator.migrations.area_map import DataMap, read_data_map
from coordinator.migrations.startup import maps_of
from coordinator.migrations.version import LayoutError, advice, literal_pattern, read_layout
from coordinator.playbooks.loader import load_playbooks
from coordinator.settings import Settings
from coordinator.state import Redis, redacted, redis_problem, run_with_redis
from coordinator.stuck_work import mark_dead_letters_seen, stuck_work

Check = Callable[[Settings], tuple[bool, str]]


def _python(settings: Settings) -> tuple[bool, str]:
    ok = sys.version_info >= (3, 11)
    return ok, f"Python {sys.version.split()[0]}" + ("" if ok else ": Loa needs 3.11 or newer")


def _config(settings: Settings) -> tuple[bool, str]:
    try:
        city = load_city(settings.config_dir, settings.area_map)
    except LoaError as exc:
        return False, f"config/ does not load:\n{exc}"
    uncatalogued = (f"; no message catalog for {', '.join(city.catalogs.missing)} (its "
                    "readers see their fallback's words)" if city.catalogs.missing else "")
    return True, (f"config: {len(city.areas)} areas, {len(city.departments)} departments, "
                  f"{len(city.people)} people, languages {', '.join(city.languages.tags)}"
                  + uncatalogued)


def _playbooks(settings: Settings) -> tuple[bool, str]:
    try:
        city = load_city(settings.config_dir, settings.area_map)
        playbooks = load_playbooks(settings.playbooks_dir, city)
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
        timers = ("`loa scheduler` alive" if await redis.exists(
            Keys(settings.redis_prefix).scheduler_heartbeat())
            else "no `loa scheduler`: the workers fire the timers, later when busy")
        return True, f"Redis at {where} answers; {len(workers)} worker(s) alive; {timers}"

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


def _area_map(settings: Settings) -> tuple[bool, str]:
    """The map the data is on against the one in force, and subscribers of areas the map in
    force lacks (they would hear nothing of them)."""
    try:
        choice = maps_of(settings)
    except LoaError as exc:
        return False, f"area map: not read ({exc})"
    in_force = choice.in_force
    if not settings.redis_url:
        return True, f"area map: {in_force} (`loa up` moves its embedded Redis to it)"

    async def read(redis: Redis) -> tuple[DataMap, dict[str, int]]:
        keys = Keys(settings.redis_prefix)
        found = await read_data_map(redis, keys, choice)
        known = choice.codes[in_force]
        prefix = keys.subs_bits("area", "")
        codes = {k.removeprefix(prefix) async for k in redis.scan_iter(
            match=literal_pattern(prefix) + "*", count=1000)} - set(known)
        counts = {c: await redis.bitcount(keys.subs_bits("area", c)) for c in sorted(codes)}
        return found, {c: n for c, n in counts.items() if n}  # an area's bits all cleared

    try:
        found, strays = run_with_redis(settings.redis_url, read)
    except LoaError as exc:
        return False, f"area map: not read ({exc})"
    except (OSError, RedisConnectionError, RedisTimeoutError):
        return False, "area map: not read (Redis does not answer: see above)"
    if found.advice(in_force):
        return False, found.advice(in_force)
    if strays:
        return False, (f"area map {in_force}: subscribers follow areas it lacks ("
                       + ", ".join(f"{c}: {n}" for c, n in strays.items())
                       + "): they hear nothing of them; see `loa areas migrate`")
    return True, f"area map: {in_force}, the data's too"


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


STUCK_AFTER_S = 120.0
"""Unfinished work older than this makes the doctor fail: a fan-out since it last moved,
anything else since it was accepted or kept."""


def _work(settings: Settings, stuck_after_s: float = STUCK_AFTER_S) -> tuple[bool, str]:
    """Work accepted and not finished, with its age (see ``coordinator.stuck_work``)."""
    if not settings.redis_url:
        return True, "work: nothing running, nothing waiting"
    try:
        found = run_with_redis(settings.redis_url,
                               lambda redis: stuck_work(redis, Keys(settings.redis_prefix)))
    except (OSError, RedisConnectionError, RedisTimeoutError):
        return False, "work: not read (Redis does not answer: see above)"
    if not found:
        return True, "work: nothing waiting (every fan-out, prompt and report finished)"
    late = [s for s in found if s.oldest_s > stuck_after_s]
    lines = "\n".join(f"    {'[red]stuck[/] ' if s in late else ''}{s.line()}" for s in found)
    unreadable = any(math.isinf(s.oldest_s) for s in late)  # waiting an unknown time
    head = (f"work stuck longer than {stuck_after_s:.0f} s"
            f"{' or unreadable' if unreadable else ''} (is a worker running? see its log):"
            if late else f"work under way, none stuck longer than {stuck_after_s:.0f} s:")
    return not late, f"{head}\n{lines}"


CHECKS: list[Check] = [_python, _config, _playbooks, _redis, _layout, _area_map, _broker,
                       _work]


def run_doctor(settings: Settings, out: Console, stuck_after_s: float = STUCK_AFTER_S,
               seen_dead_letters: bool = False) -> int:
    """Print each check; 0 when all pass, 1 otherwise. `seen_dead_letters` first notes the
    dead letters so far as looked at."""
    if seen_dead_letters and settings.redis_url:
        seen = run_with_redis(settings.redis_url, lambda redis: mark_dead_letters_seen(
            redis, Keys(settings.redis_prefix)))
        out.print(f"{seen} dead letter(s) noted as looked at")
    failed = 0
    for check in CHECKS:
        ok, message = (_work(settings, stuck_after_s) if check is _work else check(settings))
        failed += not ok
        out.print(("[green]✔[/] " if ok else "[red]✘[/] ") + message, highlight=False)
    out.print("all good" if not failed else f"{failed} problem(s) found")
    return 1 if failed else 0
