"""The APScheduler adapter: escalation timers scheduled in memory, rebuilt from Redis.

Nothing about a timer is kept apart from the approval request it belongs to:
the request's record (status, phase, level, due, hold alerts sent, the frozen
chain with its reminders) and the sorted set of pending requests
(`keys.approvals_pending()`, id -> due) say which timers it has
(`restored_timers`). APScheduler holds them in its in-memory job store only:
its Redis job store pickles jobs, and unpickling whatever is written in Redis
would turn write access to Redis into code execution in the worker.

Every worker holds the timers of every pending request: `adopt` reads the
sorted set when the worker starts and every `ADOPT_EVERY_S` after, and
(re)schedules the timers of each request whose due time it has not seen yet.
So a restarted worker, or one whose peer died, still fires deadlines, reminders
and hold alerts. The transitions re-read the request and do nothing when the
state moved on, so a timer fired by two workers, or after a decision, changes
nothing (`approvals.escalate`).

Jobs have ids derived from (request, kind, level, fraction): scheduling one
twice keeps one job. Two facts of APScheduler 3 shape this: a job more than
`misfire_grace_time` late is silently skipped (so it is None here: a deadline
that passed while the worker was down fires at once), and a date job leaves the
store when it is *submitted*, before its transition commits (a worker killed in
between loses it; the worker's sweep of overdue requests, `Pipeline.sweep`,
covers that window).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from coordinator import observability as obs
from coordinator.escalation.policy import Timer, level_timers
from coordinator.keys import Keys
from coordinator.model.approval import ApprovalRecord
from coordinator.state import Redis

TimerHandler = Callable[[str, str, int, float], Awaitable[None]]
# How often a worker reads the pending requests (10,000 ids cost ~0.25 s of CPU here) for
# those created or moved on by other workers. Deadlines do not wait for it (the worker's 0.5 s
# sweep escalates any overdue request); a reminder of a request whose worker died before
# this worker adopted it is at most this late.
ADOPT_EVERY_S = 5.0
_BATCH = 25  # records read and scheduled between two yields to the event loop
_SCAN = 500  # pending ids read at a time
# Timers handled at once. After an outage thousands may be due together: unbounded, they
# would take every connection of the Redis pool (100) from the agents, and each other.
CONCURRENT_TIMERS = 32
log = obs.get_logger("timers")


def restored_timers(record: ApprovalRecord, now: datetime) -> list[Timer]:
    """The timers of a request, rebuilt from its record alone: the level's deadline and
    reminders, or the next hold alert; none once it left pending. Of the reminders already
    past only the latest is kept (one late reminder, not a burst), and none once the
    deadline itself has passed (the escalation tells the holders more)."""
    if record.status != "pending" or record.due is None:
        return []
    if record.phase == "held":
        return [Timer("hold", record.request.id, record.alerts + 1, record.due)]
    timers = level_timers(record)
    past = sorted((t for t in timers if t.kind == "reminder" and t.at <= now),
                  key=lambda t: t.at)
    dropped = past if record.due <= now else past[:-1]
    return [t for t in timers if t not in dropped]


class Timers:
    """One worker's scheduler, holding the timers of every pending request in memory."""

    def __init__(self, handler: TimerHandler) -> None:
        self._handler = handler
        # approval id -> (the due time its timers were scheduled for, their job ids): what
        # this worker scheduled itself is not read back from Redis on the next adoption.
        self._known: dict[str, tuple[float, set[str]]] = {}
        self._adopting = asyncio.Lock()
        self._running = asyncio.Semaphore(CONCURRENT_TIMERS)
        self._fire = self._job()
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": MemoryJobStore()}, timezone=UTC,
            # misfire None: however late a timer is, it fires (the default skips it after
            # 1 s). coalesce: a job that missed several runs runs once; max 1 instance.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    def start(self, paused: bool = False) -> None:
        """Start in the running event loop; timers already overdue fire at once (once
        resumed, when started `paused`)."""
        self.scheduler.start(paused=paused)

    def pause(self) -> None:
        """Hold every timer: none fires (each is kept) until `resume`."""
        if self.scheduler.running:
            self.scheduler.pause()

    def resume(self) -> None:
        """Fire timers again; those that came due meanwhile fire at once."""
        if self.scheduler.running:
            self.scheduler.resume()

    def schedule(self, timer: Timer) -> None:
        """Add or replace the job of a timer."""
        # The in-memory store keeps the callable itself, nothing serialised.
        self.scheduler.add_job(
            self._fire, "date", run_date=timer.at, id=timer.job_id, replace_existing=True,
            args=[timer.kind, timer.approval_id, timer.number, timer.fraction],
        )
        due, jobs = self._known.get(timer.approval_id, (0.0, set()))
        if timer.kind in ("deadline", "hold"):  # their time is the request's due time
            due = timer.at.timestamp()
        self._known[timer.approval_id] = (due, jobs | {timer.job_id})

    def _job(self) -> TimerHandler:
        """What every timer's job runs: the handler, a few at a time. APScheduler checks a
        job's arguments against its function's signature each time one is added, and
        working the signature out was a third of scheduling a timer (three timers a new
        request); a function's own `__signature__` is what `inspect.signature` returns
        without working it out (PEP 362), so it is worked out once, here."""
        async def fire(kind: str, approval_id: str, number: int, fraction: float) -> None:
            async with self._running:
                await self._handler(kind, approval_id, number, fraction)

        vars(fire)["__signature__"] = inspect.signature(fire)
        return fire

    async def adopt(self, redis: Redis, keys: Keys, now: datetime) -> int:
        """Schedule the timers of every pending request whose due time is not the one this
        worker scheduled (all of them the first time), and drop those of requests no longer
        pending; returns how many requests were read. Raises RedisError."""
        async with self._adopting:
            # In chunks, yielding between them: one reply of 10,000 ids would hold the event
            # loop (and every timer due meanwhile) for a few hundred milliseconds.
            pending: dict[str, float] = {
                approval_id: due async for approval_id, due
                in redis.zscan_iter(keys.approvals_pending(), count=_SCAN)}
            for gone in self._known.keys() - pending.keys():
                self._unschedule(self._known.pop(gone)[1])
            changed = [approval_id for approval_id, due in pending.items()
                       if self._known.get(approval_id, (None,))[0] != due]
            for start in range(0, len(changed), _BATCH):
                batch = changed[start:start + _BATCH]
                async with redis.pipeline(transaction=False) as pipe:
                    for approval_id in batch:
                        pipe.hgetall(keys.approval(approval_id))
                    rows = await pipe.execute()
                for approval_id, row in zip(batch, rows, strict=True):
                    self._adopt_one(approval_id, pending[approval_id], row, now)
            return len(changed)

    def _adopt_one(self, approval_id: str, due: float, row: dict[str, str],
                   now: datetime) -> None:
        try:
            timers = restored_timers(ApprovalRecord.from_hash(row), now) if row else []
        except (KeyError, ValueError) as exc:  # a corrupt record must not stop the others
            log.error("approval record unreadable: no timers", approval=approval_id,
                      error=repr(exc))
            timers = []
        jobs = {t.job_id for t in timers}
        self._unschedule(self._known.get(approval_id, (0.0, set()))[1] - jobs)
        for timer in timers:
            self.schedule(timer)
        self._known[approval_id] = (due, jobs)

    def _unschedule(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            # Gone already when it fired: a date job leaves the store when it is submitted.
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(job_id)

    def shutdown(self) -> None:
        """Stop without waiting for running jobs; the next start rebuilds them from Redis."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)


async def drop_pickled_store(redis: Redis, keys: Keys) -> list[str]:
    """Delete, unread, the pickled APScheduler job store an older Loa kept in Redis; returns
    the keys deleted. Raises RedisError."""
    found = [key for key in keys.legacy_timer_store() if await redis.exists(key)]
    if found:
        await redis.delete(*found)
    return found
