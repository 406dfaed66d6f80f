"""The faust App and its agents: the one place that wires settings, Redis and channels.

Agents are thin: decode the event, call the domain function, send what it
produced. A message that cannot be decoded or handled goes to `dead-letters`
with its reason, and the agent goes on with the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import faust
from pydantic import BaseModel, TypeAdapter, ValidationError

from channels.registry import build_channels
from coordinator import observability as obs
from coordinator import topics
from coordinator.approvals.decisions import apply_decision
from coordinator.approvals.request import plan_incident
from coordinator.broker import bootstrap_servers
from coordinator.dispatch.publish import publish_statement
from coordinator.errors import BadEvent, LoaError
from coordinator.events import (
    DeadLetter,
    Decision,
    IncidentEvent,
    IncidentOpened,
    Report,
    Statement,
    utcnow,
)
from coordinator.incidents.intake import take_in_report
from coordinator.reports.filing import report_problems, resend_due
from coordinator.runtime import Runtime
from coordinator.settings import Settings

log = obs.get_logger("worker")
_incident_events: TypeAdapter[IncidentEvent] = TypeAdapter(IncidentEvent)
RETRIES = 5
M = TypeVar("M", bound=BaseModel)


def create_app(settings: Settings, rt: Runtime) -> faust.App:
    """The faust app with every agent of the pipeline registered."""
    assert settings.kafka_url
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap_servers(settings.kafka_url).replace(',', ';')}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",  # Tansu's "latest" is unreliable (DESIGN.md)
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # `ensure_topics` creates them, with our partition count
    )
    faust_topics = {
        spec.name: app.topic(topics.topic_name(spec, settings.topic_prefix), value_type=bytes,
                             key_type=bytes, value_serializer="raw", key_serializer="raw")
        for spec in topics.ALL
    }
    channels = build_channels(rt.redis, rt.keys)

    async def send(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        fut = await faust_topics[spec.name].send(key=key.encode(), value=value)
        await fut

    async def dead_letter(letter: DeadLetter) -> None:
        await rt.redis.xadd(rt.keys.dead_letters(), {"letter": letter.model_dump_json()},
                            maxlen=100_000, approximate=True)
        await send(topics.DEAD_LETTERS, letter.key or "", letter.to_bytes())

    async def consume(spec: topics.TopicSpec, stream: Any,
                      handle: Callable[[bytes], Awaitable[None]]) -> AsyncIterator[None]:
        async for event in stream.events():
            await _handle_safely(spec, event.key, event.value, handle, dead_letter)
            yield None

    async def intake(value: bytes) -> None:
        report = _decode(Report, value)
        problems = report_problems(report, rt.city)
        if problems:
            raise BadEvent("; ".join(f"{field}: {why}" for field, why in problems))
        taken = await take_in_report(rt.redis, rt.keys, report, settings.correlation_window_s)
        obs.REPORTS_TAKEN_IN.labels("new" if taken.first_time else "replay").inc()
        if taken.first_time and taken.opened:
            obs.INCIDENTS_OPENED.inc()
        obs.STAGE_LATENCY.labels("report_to_incident").observe(_since(report.received_at))
        log.info("report taken in", report=report.id, incident_id=taken.incident_id,
                 opened=taken.opened, first_time=taken.first_time)
        # Sent on replays too: the planner is idempotent, and a crash between
        # the Redis write and this send must not strand the incident.
        await send(topics.INCIDENT_EVENTS, taken.incident_id, taken.event(report).to_bytes())

    async def plan(value: bytes) -> None:
        event = _decode_incident_event(value)
        if not isinstance(event, IncidentOpened):
            log.info("report attached", incident_id=event.incident_id, report=event.report.id)
            return
        result = await plan_incident(rt, event.incident_id, utcnow())
        log.info("incident planned", incident_id=event.incident_id, playbook=result.playbook_id,
                 approval=result.request.id if result.request else None,
                 first_time=result.first_time)
        if result.request is not None:
            if result.first_time:
                obs.APPROVALS_REQUESTED.inc()
                obs.STAGE_LATENCY.labels("report_to_approval_request").observe(
                    _since(event.report.received_at))
            await send(topics.APPROVAL_EVENTS, event.incident_id, result.request.to_bytes())

    async def decide(value: bytes) -> None:
        decision = _decode(Decision, value)
        outcome = await apply_decision(rt, decision, utcnow())
        obs.DECISIONS.labels("accepted" if outcome.accepted else "refused").inc()
        log.info("decision applied", approval=decision.approval_id,
                 approver=decision.approver_id, verdict=decision.verdict,
                 accepted=outcome.accepted, message=outcome.message)
        if outcome.statement is not None:
            await send(topics.STATEMENTS, outcome.statement.incident_id,
                       outcome.statement.to_bytes())

    async def publish(value: bytes) -> None:
        statement = _decode(Statement, value)
        if await publish_statement(rt, channels, statement, utcnow()):
            obs.STATEMENTS_PUBLISHED.inc()
            obs.STAGE_LATENCY.labels("approval_to_publication").observe(
                _since(statement.approved_at))
        log.info("statement published", incident_id=statement.incident_id,
                 statement=statement.id)

    for spec, handler in ((topics.REPORTS, intake), (topics.INCIDENT_EVENTS, plan),
                          (topics.DECISIONS, decide), (topics.STATEMENTS, publish)):
        _register(app, faust_topics[spec.name], spec, handler, consume)

    @app.timer(interval=2.0)
    async def heartbeat() -> None:
        await rt.redis.set(rt.keys.worker_heartbeat(settings.worker_id), utcnow().isoformat(),
                           ex=10)

    @app.timer(interval=2.0)
    async def resend_outbox() -> None:
        # Reports accepted but not taken in: the broker may have lost them.
        async def resend(key: str, value: bytes) -> None:
            await send(topics.REPORTS, key, value)

        sent = await resend_due(rt.redis, rt.keys, resend, settings.outbox_resend_after_s)
        if sent:
            obs.OUTBOX_RESENT.inc(sent)
            log.warning("outboxed reports sent again", count=sent)

    return app


def _register(app: faust.App, topic: Any, spec: topics.TopicSpec,
              handler: Callable[[bytes], Awaitable[None]], consume: Any) -> None:
    async def agent(stream: Any) -> AsyncIterator[None]:
        async for _ in consume(spec, stream, handler):
            yield None

    agent.__name__ = f"{spec.name.replace('-', '_')}_agent"
    agent.__qualname__ = agent.__name__
    app.agent(topic, name=agent.__name__)(agent)


async def _handle_safely(spec: topics.TopicSpec, key: bytes | None, value: bytes,
                         handle: Callable[[bytes], Awaitable[None]],
                         dead_letter: Callable[[DeadLetter], Awaitable[None]]) -> None:
    """Run a handler; poison goes to dead-letters, transient failures are retried first."""
    reason = ""
    for attempt in range(RETRIES):
        try:
            await handle(value)
            return
        except (BadEvent, KeyError, LoaError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            break
        except Exception as exc:  # Redis or broker trouble: worth another try
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("handler failed, retrying", topic=spec.name, attempt=attempt + 1,
                        error=reason)
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
    letter = DeadLetter(topic=spec.name, key=key.decode(errors="replace") if key else None,
                        value=value.decode(errors="replace")[:10_000], reason=reason)
    obs.DEAD_LETTERS.labels(spec.name).inc()
    log.error("dead letter", topic=spec.name, reason=reason)
    await dead_letter(letter)


def _decode(model: type[M], value: bytes) -> M:
    """The event, or BadEvent naming what is wrong with it."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise BadEvent(_describe(exc)) from exc


def _decode_incident_event(value: bytes) -> IncidentEvent:
    try:
        return _incident_events.validate_json(value)
    except ValidationError as exc:
        raise BadEvent(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(value)'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    )


def _since(moment: Any) -> float:
    return max(0.0, time.time() - moment.timestamp())
