"""Take a report in: once per report id, into a new or an open incident."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.events import AuditEvent, IncidentOpened, Report, ReportAttached
from coordinator.incidents.correlation import joins
from coordinator.keys import Keys
from coordinator.model.incident import OPEN, Incident, attached, opened
from coordinator.state import Pipeline, Redis, queue_audit, transact


@dataclass(frozen=True)
class TakenIn:
    """Where a report went, and whether this call is the one that took it in."""

    incident_id: str
    opened: bool
    first_time: bool

    def event(self, report: Report) -> IncidentOpened | ReportAttached:
        """The incident event this report led to (the same one on every replay)."""
        if self.opened:
            return IncidentOpened(incident_id=self.incident_id, report=report,
                                  at=report.received_at)
        return ReportAttached(incident_id=self.incident_id, report=report, at=report.received_at)


def incident_id_for(seq: int) -> str:
    """`INC-00042` for the 42nd incident."""
    return f"INC-{seq:05d}"


async def take_in_report(redis: Redis, keys: Keys, report: Report, window_s: float) -> TakenIn:
    """Record the report in an incident, exactly once; the outbox entry goes with it."""
    report_key = keys.report(report.id)
    open_key = keys.open_incident(report.correlation_key())
    watched = [report_key, open_key]
    if report.attach_to:
        watched.append(keys.incident(report.attach_to))

    async def body(pipe: Pipeline) -> TakenIn:
        done = await pipe.hgetall(report_key)
        if done:
            pipe.multi()
            pipe.hdel(keys.outbox(), report.id)
            pipe.zrem(keys.outbox_times(), report.id)
            return TakenIn(done["incident"], done["opened"] == "1", first_time=False)
        current = report.attach_to or await pipe.get(open_key)
        if current:
            await pipe.watch(keys.incident(current))
        row = await pipe.hgetall(keys.incident(current)) if current else {}
        incident = Incident.from_hash(row) if row else None
        status = incident.status if incident else None
        last = incident.last_report_at if incident else None
        attach = (status in OPEN if report.attach_to
                  else joins(status, last, report.received_at, window_s))
        if current and incident and attach:
            pipe.multi()
            _queue_attach(pipe, keys, current, incident, report)
            result = TakenIn(current, opened=False, first_time=True)
        else:
            new_id = incident_id_for(await redis.incr(keys.incident_seq()))
            pipe.multi()
            _queue_open(pipe, keys, new_id, report)
            if not report.attach_to:  # an attachment to a closed incident opens a new one
                pipe.set(open_key, new_id)
            result = TakenIn(new_id, opened=True, first_time=True)
        pipe.hset(report_key, mapping={"incident": result.incident_id,
                                       "opened": "1" if result.opened else "0",
                                       "report": report.model_dump_json()})
        pipe.hdel(keys.outbox(), report.id)
        pipe.zrem(keys.outbox_times(), report.id)
        return result

    return await transact(redis, watched, body)


def _queue_open(pipe: Pipeline, keys: Keys, incident_id: str, report: Report) -> None:
    pipe.hset(keys.incident(incident_id), mapping=opened(incident_id, report).to_hash())
    pipe.zadd(keys.incidents(), {incident_id: report.received_at.timestamp()})
    queue_audit(pipe, keys, AuditEvent(
        at=report.received_at, actor=report.actor,
        action="incident.opened", interface=report.received_via, incident_id=incident_id,
        subject=report.id, detail={"kind": report.kind, "severity": report.severity.value,
                                   "area": report.area, "title": report.title,
                                   **({"reporter": report.reporter} if report.reporter else {}),
                                   **({"exercise": True, "drill_list": report.drill_list}
                                      if report.exercise else {})},
    ))


def _queue_attach(pipe: Pipeline, keys: Keys, incident_id: str, incident: Incident,
                  report: Report) -> None:
    pipe.hset(keys.incident(incident_id), mapping=attached(incident, report))
    pipe.hincrby(keys.incident(incident_id), "report_count", 1)
    queue_audit(pipe, keys, AuditEvent(
        at=report.received_at, actor=report.actor,
        action="incident.report_attached", interface=report.received_via,
        incident_id=incident_id, subject=report.id,
        detail={"severity": report.severity.value, "title": report.title,
                **({"reporter": report.reporter} if report.reporter else {})},
    ))
