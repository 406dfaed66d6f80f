"""The layout check `loa worker` and `loa web` make before they start, and the automatic
migration `loa up` may make on its own embedded Redis."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator import observability as obs
from coordinator.keys import Keys
from coordinator.migrations import CURRENT, STEPS
from coordinator.migrations.runner import Migration, migrate
from coordinator.migrations.version import LayoutError, advice, read_layout, stamp
from coordinator.settings import Settings
from coordinator.state import Redis, redis_problem, run_with_redis


async def check_layout(redis: Redis, keys: Keys, current: int = CURRENT) -> str:
    """Stamp an empty Redis `current` (a fresh install); "" when the layout is current, the
    advice to migrate when it is older. Raises LayoutError when it is newer."""
    layout = await read_layout(redis, keys)
    verdict = layout.verdict(current)
    if verdict == "newer":
        raise LayoutError(advice(layout, current))
    if verdict == "fresh":
        await stamp(redis, keys, current, only_if_absent=True)
    return advice(layout, current)


def check_layout_at_start(settings: Settings, who: str) -> None:
    """Before a worker or web server starts: exit (SystemExit, with the reason) on a layout
    newer than this Loa knows; log a warning, and go on, on an older one. When Redis does
    not answer yet, log that the check was skipped and go on (the process retries Redis
    as it always has)."""
    log = obs.get_logger(who)
    if not settings.redis_url:
        return

    try:
        warning = run_with_redis(settings.redis_url,
                                 lambda redis: check_layout(redis, Keys(settings.redis_prefix)))
    except LayoutError as exc:
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
