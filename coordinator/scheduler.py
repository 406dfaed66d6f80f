"""`loa scheduler`: the escalation timers in a process of their own, so they fire on time
while a worker is busy.

Every worker holds the timers of every pending approval request (``escalation.timers``),
and so does this process: whichever fires a timer first commits its transition, and the
others find the request moved on and do nothing (``approvals.escalate``). A worker's event
loop is shared with its agents: during a large fan-out hundreds of hand-overs are ready at
once, and a timer that comes due waits its turn behind them (bench/fanout.py
--escalations: p99 174 ms late). Nothing else runs on this process's loop. Without it, or
while it is down, the workers' own timers and their sweep escalate as before: it makes
deadlines punctual; it is not a part that must be up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvloop

from coordinator import observability as obs
from coordinator.broker import Producer
from coordinator.errors import BrokerUnavailable
from coordinator.escalation.timers import ADOPT_EVERY_S, Timers
from coordinator.events import utcnow
from coordinator.migrations.startup import check_layout_at_start
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime, build_runtime
from coordinator.settings import Settings
from coordinator.topics import TopicSpec

log = obs.get_logger("scheduler")
ADOPT_EVERY_S_HERE = min(ADOPT_EVERY_S, 2.0)
"""How often the scheduler reads the pending requests: a new request's timers are held
here this soon after it is made (until then, by the worker that made it)."""


def run_scheduler(settings: Settings) -> None:
    """Hold and fire the timers until SIGTERM or SIGINT."""
    obs.configure_logging(settings.log_level, settings.log_format)
    check_layout_at_start(settings, "scheduler")
    uvloop.run(serve(build_runtime(settings)))


async def serve(rt: Runtime) -> None:
    """Adopt every pending request's timers from Redis every `ADOPT_EVERY_S`, fire them as
    they come due, until told to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    producer = Producer(rt.settings)

    async def send(spec: TopicSpec, key: str, value: bytes) -> None:
        await producer.send(spec, key, value)  # BrokerUnavailable until connected

    async def on_timer(kind: str, approval_id: str, number: int, fraction: float) -> None:
        try:
            await pipeline.on_timer(kind, approval_id, number, fraction)
        except BrokerUnavailable as exc:
            # The transition is committed with what it sends kept in Redis (the outbox): a
            # worker's drain sends it.
            log.warning("timer fired; what it sends waits for a worker to send it",
                        approval=approval_id, kind=kind, error=str(exc))
        except Exception as exc:  # never take the scheduler down; a worker's sweep retries
            log.error("timer failed", approval=approval_id, kind=kind, error=repr(exc))

    timers = Timers(on_timer)
    pipeline = Pipeline(rt, {}, send, timers.schedule)
    timers.start()
    try:
        while not stop.is_set():
            await _round(rt, timers, producer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ADOPT_EVERY_S_HERE)
    finally:
        timers.shutdown()
        await producer.stop()
        await rt.redis.aclose()


async def _round(rt: Runtime, timers: Timers, producer: Producer) -> None:
    """One beat: connect to the broker if not yet, say it is alive, adopt new timers."""
    if not producer.started:  # the broker may start after us, or be away a while
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.warning("broker not reachable; timers fire all the same", error=str(exc))
    try:
        await rt.redis.set(rt.keys.scheduler_heartbeat(), rt.instance, ex=10)
        adopted = await timers.adopt(rt.redis, rt.keys, utcnow())
        if adopted:
            log.info("timers adopted", requests=adopted)
    except Exception as exc:  # Redis away for a while: the next round retries
        log.warning("timers not adopted; next round retries", error=repr(exc))
