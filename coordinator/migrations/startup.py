"""The layout check `loa worker` and `loa web` make before they start, and the automatic
migration `loa up` may make on its own embedded Redis."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator import observability as obs
from coordinator.area_mapping import mapping_path, read_mapping
from coordinator.area_maps import areas_config, load_area_map, read_yaml
from coordinator.keys import Keys
from coordinator.languages import load_languages
from coordinator.migrations import CURRENT, OLDEST_RUNNABLE, STEPS
from coordinator.migrations.area_map import (
    AreaMapMismatch,
    MapChoice,
    check_area_map,
    read_data_map,
)
from coordinator.migrations.area_moves import Mover, move_areas
from coordinator.migrations.runner import Migration, migrate
from coordinator.migrations.version import LayoutError, advice, read_layout, stamp
from coordinator.settings import Settings
from coordinator.state import Redis, redis_problem, run_with_redis


def maps_of(settings: Settings) -> MapChoice:
    """The area map in force, the map of data from before maps had versions, and the codes
    of both; raises ConfigError naming a map that does not load."""
    found = areas_config(settings.config_dir)
    in_force = settings.area_map or found.map
    languages = load_languages(read_yaml(settings.config_dir / "languages.yaml"))
    names = dict.fromkeys(n for n in (in_force, found.unversioned) if n)
    return MapChoice(in_force, found.unversioned, {
        name: frozenset(load_area_map(settings.config_dir, languages, name).areas)
        for name in names})


async def check_layout(redis: Redis, keys: Keys, current: int = CURRENT) -> str:
    """Stamp an empty Redis `current` (a fresh install); "" when the layout is current, the
    advice to migrate when it is older but still readable. Raises LayoutError when it is
    newer, or older than :data:`OLDEST_RUNNABLE`."""
    layout = await read_layout(redis, keys)
    verdict = layout.verdict(current)
    if verdict == "newer" or (verdict == "older" and (layout.version or 0) < OLDEST_RUNNABLE):
        raise LayoutError(advice(layout, current))
    if verdict == "fresh":
        await stamp(redis, keys, current, only_if_absent=True)
    return advice(layout, current)


def check_layout_at_start(settings: Settings, who: str) -> None:
    """Before a worker or web server starts: exit (SystemExit, with the reason) on a layout
    newer than this Loa knows or older than it can run on, or data on another area map
    than the one in force; log a warning, and go on, on an older layout it can run on.
    When Redis does not answer yet, log that the check was skipped and go on (the process
    retries Redis as it always has)."""
    log = obs.get_logger(who)
    if not settings.redis_url:
        return

    choice = maps_of(settings)

    async def checks(redis: Redis) -> str:
        keys = Keys(settings.redis_prefix)
        advice_ = await check_layout(redis, keys)
        await check_area_map(redis, keys, choice)
        return advice_

    try:
        warning = run_with_redis(settings.redis_url, checks)
    except (LayoutError, AreaMapMismatch) as exc:
        log.error("refusing to start", reason=str(exc))
        raise SystemExit(f"loa {who}: {exc}") from exc
    except (OSError, RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("layout not checked", reason=redis_problem(settings.redis_url, exc))
        return
    if warning:
        log.warning("old Redis layout", advice=warning)


def migrate_embedded(redis_url: str, prefix: str) -> Migration:
    """Apply every pending step to the embedded Redis of `loa up` (nobody else uses it).
    Raises LayoutError on a layout newer than this Loa knows."""

    return run_with_redis(redis_url,
                          lambda redis: migrate(redis, Keys(prefix), True, STEPS, CURRENT))


def move_embedded_map(redis_url: str, settings: Settings) -> list[str]:
    """On `loa up`'s own Redis: when the data is on an earlier area map and config/ has the
    mapping to the one in force, move it (as `loa areas migrate --apply` would); the lines
    to tell the operator. Raises AreaMapMismatch when it cannot (no mapping file, or an open
    incident or credential of a split area: the operator chooses, docs/areas.md)."""
    choice = maps_of(settings)
    in_force = choice.in_force
    keys = Keys(settings.redis_prefix)

    async def work(redis: Redis) -> list[str]:
        found = await read_data_map(redis, keys, choice)
        if found.name in (None, in_force):
            return []
        path = mapping_path(settings.config_dir, found.name, in_force)
        if not path.is_file():
            raise AreaMapMismatch(found.advice(in_force) + f" (no mapping file {path})")
        languages = load_languages(read_yaml(settings.config_dir / "languages.yaml"))
        table = read_mapping(path, load_area_map(settings.config_dir, languages, found.name),
                             load_area_map(settings.config_dir, languages, in_force))
        done = await move_areas(redis, keys, table, settings.playbooks_dir, {},
                                Mover("system", "system"))
        lines = [f"area map: moving the data from {found.name} to {in_force}",
                 *done.lines(found.name, in_force)]
        if done.blocked:
            raise AreaMapMismatch("\n".join([*lines, (
                f"`loa up` cannot choose: start it with LOA_AREA_MAP={found.name}, run that "
                f"`loa areas migrate --from {found.name} --to {in_force} --choose OLD=NEW "
                "--apply` in another shell, and start it again")]))
        return [*lines[:-1], f"done: the data is on {in_force}"]

    return run_with_redis(redis_url, work)
