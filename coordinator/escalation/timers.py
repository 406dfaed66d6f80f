"""The APScheduler adapter: escalation timers in a Redis job store, so they survive restarts.

Jobs have ids derived from (request, kind, level), so scheduling one twice
keeps one job. Every job fires `run_timer`, which hands over to the handler the
worker installed; the handler re-reads the request and does nothing when the
state moved on.

Two facts of APScheduler 3 shape this: a job more than `misfire_grace_time`
late is silently skipped (so it is None here: a deadline that passed while
everything was down fires at once), and a date job is removed from the store
when it is *submitted*, not when it finishes (so a worker killed in between
loses it; the worker's sweep of overdue requests covers that window).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.connection import parse_url

from coordinator.escalation.transitions import Timer
from coordinator.keys import Keys

TimerHandler = Callable[[str, str, int, float], Awaitable[None]]
_handler: TimerHandler | None = None


async def run_timer(kind: str, approval_id: str, number: int, fraction: float = 0.0) -> None:
    """What every stored job calls (by reference, so stored jobs outlive code reloads)."""
    if _handler is not None:
        await _handler(kind, approval_id, number, fraction)


class Timers:
    """One scheduler per worker, all sharing one Redis job store."""

    def __init__(self, redis_url: str, keys: Keys, handler: TimerHandler) -> None:
        global _handler
        _handler = handler
        connect: dict[str, Any] = dict(parse_url(redis_url))  # type: ignore[no-untyped-call]
        store = RedisJobStore(jobs_key=keys.timer_jobs(), run_times_key=keys.timer_run_times(),
                              **connect)
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": store}, timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        """Start in the running event loop; overdue stored jobs run at once."""
        self.scheduler.start()

    def wake(self) -> None:
        """Look at the store again: jobs added by other processes are seen only on a wakeup."""
        if self.scheduler.running:
            self.scheduler.wakeup()

    def schedule(self, timer: Timer) -> None:
        """Add or replace the job of a timer."""
        self.scheduler.add_job(
            run_timer, "date", run_date=timer.at, id=timer.job_id, replace_existing=True,
            args=[timer.kind, timer.approval_id, timer.number, timer.fraction],
        )

    def shutdown(self) -> None:
        """Stop without waiting for running jobs; stored jobs stay for the next start."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
