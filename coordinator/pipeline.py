"""The handler of each topic: decode, call the domain function, send what follows.

Kept apart from faust (``coordinator.app`` wires these to agents) so that the
handlers read as the data flow: report -> incident -> plan -> decision -> publication.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from channels.base import Channel
from coordinator import observability as obs
from coordinator import topics
from coordinator.approvals.decisions import apply_decision
from coordinator.approvals.request import plan_incident
from coordinator.dispatch.publish import publish_statement
from coordinator.errors import BadEvent
from coordinator.events import Decision, IncidentEvent, IncidentOpened, Report, Statement, utcnow
from coordinator.incidents.intake import take_in_report
from coordinator.reports.filing import report_problems
from coordinator.runtime import Runtime

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)
log = obs.get_logger("pipeline")
_incident_events: TypeAdapter[IncidentEvent] = TypeAdapter(IncidentEvent)


class Pipeline:
    """One handler per consumed topic; each may run twice on the same event without effect."""

    def __init__(self, rt: Runtime, channels: dict[str, Channel], send: Send) -> None:
        self.rt = rt
        self.channels = channels
        self.send = send

    def handlers(self) -> dict[topics.TopicSpec, Callable[[bytes], Awaitable[None]]]:
        """Which handler consumes which topic."""
        return {topics.REPORTS: self.intake, topics.INCIDENT_EVENTS: self.plan,
                topics.DECISIONS: self.decide, topics.STATEMENTS: self.publish}

    async def intake(self, value: bytes) -> None:
        """A report joins or opens an incident."""
        report = decode(Report, value)
        problems = report_problems(report, self.rt.city)
        if problems:
            raise BadEvent("; ".join(f"{field}: {why}" for field, why in problems))
        taken = await take_in_report(self.rt.redis, self.rt.keys, report,
                                     self.rt.settings.correlation_window_s)
        obs.REPORTS_TAKEN_IN.labels("new" if taken.first_time else "replay").inc()
        if taken.first_time and taken.opened:
            obs.INCIDENTS_OPENED.inc()
            obs.STAGE_LATENCY.labels("report_to_incident").observe(since(report.received_at))
        log.info("report taken in", report=report.id, incident_id=taken.incident_id,
                 opened=taken.opened, first_time=taken.first_time)
        # Sent on replays too: the planner is idempotent, and a crash between
        # the Redis write and this send must not strand the incident.
        await self.send(topics.INCIDENT_EVENTS, taken.incident_id, taken.event(report).to_bytes())

    async def plan(self, value: bytes) -> None:
        """An opened incident gets its playbook, draft and approval request."""
        event = decode_incident_event(value)
        if not isinstance(event, IncidentOpened):
            log.info("report attached", incident_id=event.incident_id, report=event.report.id)
            return
        result = await plan_incident(self.rt, event.incident_id, utcnow())
        log.info("incident planned", incident_id=event.incident_id, playbook=result.playbook_id,
                 approval=result.request.id if result.request else None,
                 first_time=result.first_time)
        if result.request is None:
            return
        if result.first_time:
            obs.APPROVALS_REQUESTED.inc()
            obs.STAGE_LATENCY.labels("report_to_approval_request").observe(
                since(event.report.received_at))
        await self.send(topics.APPROVAL_EVENTS, event.incident_id, result.request.to_bytes())

    async def decide(self, value: bytes) -> None:
        """An approver's decision: approve -> statement, reject -> back to the duty officer."""
        decision = decode(Decision, value)
        outcome = await apply_decision(self.rt, decision, utcnow())
        obs.DECISIONS.labels("accepted" if outcome.accepted else "refused").inc()
        log.info("decision applied", approval=decision.approval_id,
                 approver=decision.approver_id, verdict=decision.verdict,
                 accepted=outcome.accepted, message=outcome.message)
        if outcome.statement is not None:
            await self.send(topics.STATEMENTS, outcome.statement.incident_id,
                            outcome.statement.to_bytes())

    async def publish(self, value: bytes) -> None:
        """An approved statement goes out on its channels."""
        statement = decode(Statement, value)
        if await publish_statement(self.rt, self.channels, statement, utcnow()):
            obs.STATEMENTS_PUBLISHED.inc()
            obs.STAGE_LATENCY.labels("approval_to_publication").observe(
                since(statement.approved_at))
        log.info("statement published", incident_id=statement.incident_id,
                 statement=statement.id)


def decode(model: type[M], value: bytes) -> M:
    """The event, or BadEvent naming what is wrong with it."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise BadEvent(describe(exc)) from exc


def decode_incident_event(value: bytes) -> IncidentEvent:
    """An incident event of any type, or BadEvent."""
    try:
        return _incident_events.validate_json(value)
    except ValidationError as exc:
        raise BadEvent(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    """`field: message; ...` for the first few errors."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(value)'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    )


def since(moment: datetime) -> float:
    """Seconds from `moment` until now (never negative)."""
    return max(0.0, time.time() - moment.timestamp())
