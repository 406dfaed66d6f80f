"""`loa scheduler`: the escalation timers in a process of their own, so they fire on time
while a worker is busy.

Every worker holds the timers of every pending approval request (``escalation.timers``),
and so does this process: whichever fires a timer first commits its transition, and the
others find the request moved on and do nothing (``approvals.escalate``). A worker's event
loop is shared with its agents: during a large fan-out hundreds of hand-overs are ready at
once, and a timer that comes due waits its turn behind them (bench/fanout.py
--escalations: p99 174 ms late). Without it, or while it is down, the workers' own timers
and their sweep escalate as before: it makes deadlines punctual; it is not a part that must
be up.

The only other work on its loop is the audit trail's seal (``audit.sealer``), kept off the
workers' loops while this process runs (the workers seal when it does not): a round every
half second, 100 entries a transaction, so a timer waits at most one such batch (about
7 ms). During a fan-out of 50,000 SMS and 50,000 emails its timers were late p99 6.3 ms,
max 10.8 ms (bench/fanout.py --share 0.4 --escalations 1000); with the timers alone on its
loop, 5.4 and 7.0 ms; sealing 5,000 entries a transaction, 9.9 and 22.3 ms.

It fires only while it can reach the broker: an escalation it committed but whose prompts
it could not send would wait for a worker's outbox drain (30 s), where a worker's own timer
would have sent them at once. So its timers are paused until its producer is connected,
and again when a send fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvloop
from prometheus_client import start_http_server

from coordinator import observability as obs
from coordinator.audit.sealer import CHECKPOINT_KEY_PURPOSE, SEAL_EVERY_S, seal_as_scheduler
from coordinator.broker import Producer, kafka_security
from coordinator.errors import BrokerUnavailable, ConfigError
from coordinator.escalation.timers import Timers
from coordinator.events import utcnow
from coordinator.migrations.startup import check_layout_at_start
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime, build_runtime, settle_heap
from coordinator.settings import Settings
from coordinator.topics import TopicSpec

log = obs.get_logger("scheduler")
ADOPT_EVERY_S = 2.0
"""How often the scheduler reads the pending requests (a worker: every 5 s): a new
request's timers are held here this soon after it is made (until then, by the worker that
made it)."""
RECONNECT_MAX_S = 30.0
"""The longest pause between two attempts to reach the broker."""


def run_scheduler(settings: Settings) -> None:
    """Hold and fire the timers until SIGTERM or SIGINT."""
    obs.configure_logging(settings.log_level, settings.log_format)
    kafka_security(settings)  # a broken TLS or SASL setting stops here, named
    check_layout_at_start(settings, "scheduler")
    rt = build_runtime(settings)
    if settings.scheduler_metrics_port:  # loa_escalation_lateness_seconds of what fires here
        start_http_server(settings.scheduler_metrics_port, addr="127.0.0.1")
    settle_heap()
    uvloop.run(serve(rt))


async def serve(rt: Runtime) -> None:
    """Adopt every pending request's timers from Redis every `ADOPT_EVERY_S`, fire them
    as they come due while the broker is reachable, until told to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    producer = Producer(rt.settings)
    lost = asyncio.Event()  # a send failed: reconnect before firing again

    async def send(spec: TopicSpec, key: str, value: bytes) -> None:
        try:
            await producer.send(spec, key, value)
        except BrokerUnavailable:
            timers.pause()
            lost.set()
            raise

    async def on_timer(kind: str, approval_id: str, number: int, fraction: float) -> None:
        try:
            await pipeline.on_timer(kind, approval_id, number, fraction)
        except BrokerUnavailable as exc:
            # Committed, with what it sends kept in Redis (the outbox): a worker's drain
            # sends it. Until the broker answers again, the workers fire the timers.
            log.warning("timer fired; what it sends waits for a worker to send it",
                        approval=approval_id, kind=kind, error=str(exc))
        except Exception as exc:  # never take the scheduler down; a worker's sweep retries
            log.error("timer failed", approval=approval_id, kind=kind, error=repr(exc))

    timers = Timers(on_timer)
    pipeline = Pipeline(rt, {}, send, timers.schedule)
    timers.start(paused=True)
    connecting = asyncio.create_task(_keep_connected(producer, timers, lost),
                                     name="reaching the broker")
    sealing = asyncio.create_task(_seal(rt), name="sealing the audit trail")
    for task in (connecting, sealing):
        task.add_done_callback(_said_if_crashed)
    try:
        while not stop.is_set():
            await _beat(rt, timers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ADOPT_EVERY_S)
    finally:
        timers.shutdown()
        await _end(rt, connecting, sealing)
        await producer.stop()
        await rt.redis.aclose()


async def _end(rt: Runtime, *tasks: asyncio.Task[None]) -> None:
    """Cancel the background tasks and wait for them; then take the heartbeat and the word
    that this process seals away at once, not 10 and 5 s later (`loa doctor`; the workers
    seal again at their next round)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # a crash was logged as it came
    with contextlib.suppress(Exception):
        await rt.redis.delete(rt.keys.scheduler_heartbeat(), rt.keys.audit_sealer())


def _said_if_crashed(task: asyncio.Task[None]) -> None:
    """A background task that died of an error is logged as it dies (the timers then wait
    for the broker's task in vain; sealing falls to the workers 5 s later)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a scheduler task stopped with an error", task=task.get_name(),
                  error=repr(task.exception()))


async def _seal(rt: Runtime) -> None:
    """Seal the audit trail every SEAL_EVERY_S, saying after each batch that it does (the
    workers then leave it to this process). Runs until cancelled. Without
    LOA_SECRET_KEY (checkpoints are signed with a key derived from it) it leaves sealing to
    the workers, which need the key to start at all."""
    try:
        key = rt.settings.key_for(CHECKPOINT_KEY_PURPOSE)
    except ConfigError as exc:
        log.warning("the audit trail is left to the workers to seal", reason=str(exc))
        return
    deferring = False
    while True:
        try:
            sealed = await seal_as_scheduler(rt.redis, rt.keys, key,
                                             rt.settings.audit_checkpoint_s)
            if (sealed is None) != deferring:  # said once each time it changes
                deferring = sealed is None
                if deferring:
                    log.error("the newest audit checkpoint is signed with another key: this "
                              "scheduler's LOA_SECRET_KEY is not the workers'; they seal")
                else:
                    log.info("sealing the audit trail again")
        except Exception as exc:  # Redis away: the workers take over once the word expires
            log.warning("audit entries not sealed yet; next round retries", error=repr(exc))
        await asyncio.sleep(SEAL_EVERY_S)


async def _keep_connected(producer: Producer, timers: Timers, lost: asyncio.Event) -> None:
    """Connect the producer, with backoff; fire timers only while it is connected. Runs
    until cancelled."""
    wait_s = 1.0
    while True:
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.warning("broker not reachable; timers are left to the workers", error=str(exc))
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, RECONNECT_MAX_S)
            continue
        wait_s = 1.0
        timers.resume()
        log.info("broker reached; firing timers")
        await lost.wait()  # a send failed (`send` paused the timers): connect afresh
        lost.clear()
        await producer.stop()


async def _beat(rt: Runtime, timers: Timers) -> None:
    """Say it is alive, and adopt the timers of requests made or moved on elsewhere."""
    try:
        await rt.redis.set(rt.keys.scheduler_heartbeat(), rt.instance, ex=10)
        adopted = await timers.adopt(rt.redis, rt.keys, utcnow())
        if adopted:
            log.info("timers adopted", requests=adopted)
    except Exception as exc:  # Redis away for a while: the next round retries
        log.warning("timers not adopted; next round retries", error=repr(exc))
