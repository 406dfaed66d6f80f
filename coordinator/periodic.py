"""The worker's periodic work, beside its agents: the heartbeat, the escalation timers and
their sweep, the outbox drain, the recovery of what the broker lost, the audit sealer,
promised updates, reports to send again, and the watch for awaited answers that paces the
consumer's fetches.

A faust timer that raises crashes the whole worker: every timer here catches, logs, and
leaves the work to its next round."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from channels.sms import SmsChannel
from coordinator import faust_kafka, topics
from coordinator import observability as obs
from coordinator.audit.sealer import CHECKPOINT_KEY_PURPOSE, SEAL_EVERY_S, seal_as_worker
from coordinator.dispatch.status_sweep import ASKED_A_ROUND, sweep_statuses
from coordinator.escalation.timers import ADOPT_EVERY_S, Timers, drop_pickled_store
from coordinator.events import utcnow
from coordinator.pipeline import Pipeline
from coordinator.queries import answers_expected
from coordinator.reports.resend import ASK_TIMEOUT_S, ReportResend, ReportsBacklog
from coordinator.runtime import Runtime
from coordinator.state import Redis, delete_if_still
from coordinator.statements.promises import sweep_promises

log = obs.get_logger("worker")
Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_TTL_S = 10
HEARTBEAT_GRACE_MS = 3_000
RECOVER_EVERY_S = 5.0
STATUS_SWEEP_EVERY_S = 5.0
STATUS_ROUNDS_A_SWEEP = 5  # at most 500 questions every 5 s, 4 at once (status_sweep)


def register_periodic_work(app: faust_kafka.App, pipeline: Pipeline, timers: Timers,
                           send: Send) -> None:
    """Every timer and task of the worker besides its agents."""
    rt = pipeline.rt
    _register_heartbeat(app, rt)
    _register_timers(app, rt, send)
    _register_report_resend(app, rt, send)
    _register_escalation(app, timers, pipeline)
    _register_outbox_drain(app, pipeline)
    _register_recovery(app, pipeline)
    _register_sealer(app, rt)
    _register_answer_watch(app, rt)
    _register_status_sweep(app, pipeline)


async def beat(rt: Runtime, first: bool = False) -> None:
    """Say this process is alive for the next :data:`HEARTBEAT_TTL_S`. After the `first`
    beat (which replaces whatever an earlier process of this id left), say loudly when it
    named another process: two running under one LOA_WORKER_ID, started within seconds of
    each other (past the check at start)."""
    before = await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance,
                                ex=HEARTBEAT_TTL_S, get=True)
    if not first and before not in (None, rt.instance):
        log.error("another process beats as this worker: give each its own LOA_WORKER_ID",
                  worker=rt.settings.worker_id, other=before)


async def twin_alive(redis: Redis, key: str, wait_s: float = HEARTBEAT_EVERY_S + 1.0) -> str:
    """The instance of another live process beating at this heartbeat `key` ("" when none),
    asked before a worker starts under that id: a heartbeat renewed while this waits
    `wait_s` (longer than :data:`HEARTBEAT_EVERY_S`) is alive; one a process killed or
    stopped just now left behind is not renewed, and runs out. Two processes of one id
    would take each other's deliveries in flight for a dead one's, and send them twice.
    Two started within a few seconds of each other both find none: :func:`beat` says so
    once they beat."""
    first, held = await _ttl_and_value(redis, key)
    if first < 0:  # none (-2), or none that expires (-1: not a heartbeat Loa wrote)
        return ""
    log.info("a heartbeat of this worker id is there: waiting to see whether it is renewed",
             key=key, seconds=wait_s)
    await asyncio.sleep(wait_s)
    second, now_held = await _ttl_and_value(redis, key)
    renewed = second > first - wait_s * 1000 + 500 or now_held != held
    return str(now_held) if now_held is not None and renewed else ""


async def _ttl_and_value(redis: Redis, key: str) -> tuple[int, Any]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.pttl(key)
        pipe.get(key)
        ttl, value = await pipe.execute()
    return int(ttl), value


def _register_heartbeat(app: faust_kafka.App, rt: Runtime) -> None:
    """The heartbeat says the deliveries this process claimed are being handed over (the
    claim script leaves them to it: `busy`), so it lasts as long as anything here may still
    hand one over. Not a timer: faust stops its timers as soon as a stop begins, and the
    agents then drain: what they hand over and is not with the provider yet is cut off
    (``dispatch.stopping``), and the requests in flight get a few seconds to end. A
    task runs on until faust's last step of stopping the app, once the agents are drained
    and the work done at once has ended or been cut off; the heartbeat then
    expires :data:`HEARTBEAT_GRACE_MS` later (a hand-over cut off in flight may still land
    at the provider), so what was cut off is finished by another worker without waiting for
    the whole TTL. A process killed, or an event loop stalled for longer than the TTL,
    loses it."""

    @app.task  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        # The first beat: from now on a delivery the previous instance of this worker left
        # in flight is an orphan (see dispatch.handover), not someone else's work.
        try:
            first = True
            while True:
                try:
                    await beat(rt, first)
                    first = False
                except Exception as exc:
                    log.warning("heartbeat failed", error=repr(exc))
                await asyncio.sleep(HEARTBEAT_EVERY_S)
        finally:
            if app.should_stop:  # cancelled by the stop, not by anything else
                try:
                    await asyncio.wait_for(delete_if_still(
                        rt.redis, rt.keys.worker_heartbeat(rt.settings.worker_id),
                        rt.instance, after_ms=HEARTBEAT_GRACE_MS), HEARTBEAT_EVERY_S)
                except Exception as exc:  # it expires by itself
                    log.warning("heartbeat not shortened at stop", error=repr(exc))


def _register_answer_watch(app: faust_kafka.App, rt: Runtime) -> None:
    """While an approval request awaits an approver, an answer may come any moment: the
    consumer fetches as if records flowed, so the decision's hop does not pay the idle wait (on
    Tansu, up to `LOA_BROKER_IDLE_FETCH_WAIT_MS`). Looked at once a second."""

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def watch_for_answers() -> None:
        try:
            app.fetch_pace.expecting = await answers_expected(rt.redis, rt.keys)
        except Exception as exc:  # Redis away: the pace stays as it was
            log.debug("pending approvals not counted", error=repr(exc))


def _register_status_sweep(app: faust.App, pipeline: Pipeline) -> None:
    """Ask the SMS provider for the final status of messages whose callbacks have not come
    (coordinator.dispatch.status_sweep)."""
    rt, channel = pipeline.rt, pipeline.channels.get("sms")
    if not isinstance(channel, SmsChannel):  # none configured: nothing to ask
        return

    @app.timer(interval=STATUS_SWEEP_EVERY_S)  # type: ignore[untyped-decorator]
    async def ask_for_statuses() -> None:
        try:
            for _ in range(STATUS_ROUNDS_A_SWEEP):
                swept = await sweep_statuses(rt, channel, utcnow())
                if swept.moved:
                    log.info("SMS statuses asked of the provider (their callbacks never came)",
                             moved=len(swept.moved), not_final_yet=len(swept.waiting))
                if swept.given_up:
                    log.warning("SMS left without a final status (3 days old, unknown to the "
                                "provider, or without a readable time)",
                                count=len(swept.given_up))
                if swept.unanswered:
                    log.warning("the SMS provider did not answer status questions; asked "
                                "again later", count=len(swept.unanswered), error=swept.error)
                if swept.taken < ASKED_A_ROUND:
                    break
        except Exception as exc:
            log.warning("SMS statuses not asked; next round retries", error=repr(exc))


def _register_sealer(app: faust.App, rt: Runtime) -> None:
    """Chain what was audited, a batch at a time, unless `loa scheduler` does
    (coordinator.audit.sealer)."""
    settings = rt.settings
    key = settings.key_for(CHECKPOINT_KEY_PURPOSE)

    @app.timer(interval=SEAL_EVERY_S)  # type: ignore[untyped-decorator]
    async def seal_audit() -> None:
        try:
            await seal_as_worker(rt.redis, rt.keys, key, settings.audit_checkpoint_s)
        except Exception as exc:
            log.warning("audit entries not sealed yet; next round retries", error=repr(exc))


def _register_recovery(app: faust.App, pipeline: Pipeline) -> None:
    @app.timer(interval=RECOVER_EVERY_S)  # type: ignore[untyped-decorator]
    async def recover_lost_work() -> None:
        # Redis is the record, the broker carries: what the broker lost (a restart of an
        # embedded broker keeps nothing) is found in the ledgers and sent again.
        try:
            found = await pipeline.recover()
        except Exception as exc:
            log.error("recovery round failed; the next one retries", error=repr(exc))
            return
        if found:
            log.warning("lost work sent again", fan_outs=found.fan_outs_resumed,
                        batches=found.batches_sent_again,
                        deliveries=found.deliveries_sent_again)


def _register_escalation(app: faust.App, timers: Timers, pipeline: Pipeline) -> None:
    rt = pipeline.rt

    @app.task  # type: ignore[untyped-decorator]
    async def start_timers() -> None:
        timers.start()
        try:
            dropped = await drop_pickled_store(rt.redis, rt.keys)
            if dropped:
                log.warning("deleted, unread, the pickled timer store of an older Loa; timers "
                            "are rebuilt from the approval requests", keys=dropped)
            adopted = await timers.adopt(rt.redis, rt.keys, utcnow())
        except Exception as exc:  # the next adoption round retries; the sweep escalates
            log.error("timers not rebuilt from Redis yet", error=repr(exc))
            return
        log.info("timers rebuilt from Redis", requests=adopted)

    @app.on_before_shutdown.connect
    async def stop_timers(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # No timer fires into a closing producer; the next start rebuilds them from Redis.
        timers.shutdown()

    @app.timer(interval=ADOPT_EVERY_S)  # type: ignore[untyped-decorator]
    async def adopt_timers() -> None:
        # Requests planned or moved on by other workers: their timers are in those workers'
        # memory only, and must fire here too if those workers die.
        try:
            await timers.adopt(rt.redis, rt.keys, utcnow())
        except Exception as exc:
            log.warning("timers not adopted; next round retries", error=repr(exc))

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    async def sweep_overdue() -> None:
        # A timer job leaves the scheduler when submitted, before its transition commits: a
        # crash in between, or a failed transition, is caught here, 1 to 1.5 s late.
        try:
            swept = await pipeline.sweep()
        except Exception as exc:
            log.error("sweep failed", error=repr(exc))
            return
        if swept:
            log.warning("overdue approvals swept", count=swept)


def _register_outbox_drain(app: faust.App, pipeline: Pipeline) -> None:
    @app.on_partitions_assigned.connect
    async def send_kept_again(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # A new assignment: a worker joined or left, or the broker came back, maybe empty
        # (`loa up` restarts it alone, or with the rest). Every kept message goes out again
        # in the next round, as when the worker starts: what the broker carried may be
        # lost, and a prompt must not wait out its resend interval (up to 10 minutes), nor
        # a parked message an hour.
        pipeline.drainer.send_all_again()

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    async def drain_outbox() -> None:
        # Its own timer: a round waiting on a broker that is away (up to GIVE_UP_AFTER sends
        # of SEND_TIMEOUT_S each) does not hold up the sweep of overdue escalation timers.
        try:
            await pipeline.drain_followups()
        except Exception as exc:
            log.error("outbox drain failed", error=repr(exc))


def _register_timers(app: faust.App, rt: Runtime, send: Send) -> None:
    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def mind_promises() -> None:
        # Promised updates coming due or broken: the duty officers are told, once each.
        try:
            told = await sweep_promises(rt, send, utcnow())
        except Exception as exc:
            log.warning("promise sweep failed; next round retries", error=repr(exc))
            return
        if told:
            log.info("promised updates minded", told=told)


def _register_report_resend(app: faust.App, rt: Runtime, send: Send) -> None:
    """Reports accepted but not taken in: the broker may have lost them (sent again once
    the workers have read past the backlog they may still be queued in)."""
    settings = rt.settings

    async def resend(key: str, value: bytes) -> None:
        await send(topics.REPORTS, key, value)

    backlog = ReportsBacklog(settings)
    reports = ReportResend(rt.redis, rt.keys, resend, settings.outbox_resend_after_s, backlog)

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def resend_outbox() -> None:
        held = reports.held
        try:
            sent = await reports.round()
        except Exception as exc:
            log.warning("outbox resend failed; next round retries", error=repr(exc))
            return
        if sent:
            obs.OUTBOX_RESENT.inc(sent)
            log.warning("outboxed reports sent again", count=sent)
        elif reports.held and not held:
            log.info("outboxed reports not sent again yet: the workers are still reading "
                     "the reports before them", reports=reports.held,
                     read_up_to=reports.mark)

    @app.on_before_shutdown.connect
    async def close_backlog(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        try:
            await asyncio.wait_for(backlog.close(), ASK_TIMEOUT_S)
        except Exception as exc:  # shutting down: say so, but go on
            log.warning("the reports backlog's broker connection did not close cleanly",
                        error=repr(exc))
