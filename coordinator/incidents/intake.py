"""Take a report in: once per report id, into a new or an open incident.

A report joins the open incident of its kind and area (within the correlation window); a
report of a false claim joins the open rumour whose claim it repeats (incidents.claims),
whatever its area; a duty officer may attach a report to the incident they choose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator import outbox, topics
from coordinator.access import may_raise_severity
from coordinator.events import AuditEvent, IncidentOpened, Report
from coordinator.incidents.claims import best_match
from coordinator.incidents.correlation import joins
from coordinator.incidents.surge import queue_count, queue_counts_read
from coordinator.keys import Keys
from coordinator.model.incident import OPEN, Incident, attached, opened
from coordinator.state import Pipeline, Redis, queue_audit, transact, watch_and_read

AreaPath = Callable[[str], Sequence[str]]  # an area -> it and the areas containing it


@dataclass(frozen=True)
class TakenIn:
    """Where a report went, and whether this call is the one that took it in."""

    incident_id: str
    opened: bool
    first_time: bool
    # The surge detector's reads, made in the same transaction (None: not made).
    surge_seen: list[Any] | None = None

    def opened_event(self, report: Report) -> IncidentOpened:
        """The incident this report opened, to plan (the same event on every replay)."""
        return IncidentOpened(incident_id=self.incident_id, report=report,
                              at=report.received_at)


def opened_message_id(incident_id: str) -> str:
    """The kept message (``outbox``) of an opened incident to plan."""
    return f"opened:{incident_id}"


def incident_id_for(seq: int) -> str:
    """`INC-00042` for the 42nd incident."""
    return f"INC-{seq:05d}"


class OpenIncidents:
    """The incident each correlation key was last seen open as, in this process: the one a
    report of that kind and area most likely joins, read with the report's own record (one
    round trip less a report) rather than after it. Only ever a guess: the intake checks it
    against the open incident it reads."""

    MOST = 10_000

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def likely(self, report: Report) -> str | None:
        """The incident `report` most likely joins: the one it names, else the last seen
        open for its kind and area (none for a claim, matched by its words)."""
        if report.attach_to or report.claim:
            return report.attach_to
        return self._seen.get(report.correlation_key())

    def saw(self, report: Report, taken: TakenIn) -> None:
        """Where a report of no claim and no chosen incident went: its key's open one."""
        if report.attach_to or report.claim or not taken.first_time:
            return
        if len(self._seen) >= self.MOST:
            self._seen.clear()
        self._seen[report.correlation_key()] = taken.incident_id


async def take_in_report(redis: Redis, keys: Keys, report: Report, window_s: float,
                         claim_threshold: float = 0.4, surge_path: Sequence[str] = (),
                         surge_window_s: float = 600.0,
                         seen: OpenIncidents | None = None,
                         area_path: AreaPath = lambda area: [area]) -> TakenIn:
    """Record the report in an incident, exactly once; the outbox entry goes with it, and
    so does its count for the surge detector in each area of `surge_path` (not a drill's),
    with the detector's reads (`surge_seen`). An incident it opens is kept to be planned
    (``outbox``, not sent: the caller plans it at once, and the drain sends it to
    `incident-events` should that be cut off). `seen`: where this process saw reports of
    its kind and area go, updated. `area_path`: an area and those containing it (the
    city's), for whether the report's filer may raise its incident's severity."""
    open_key = keys.open_incident(report.correlation_key())
    claims_key = keys.open_claims(report.exercise)
    likely = seen.likely(report) if seen is not None else report.attach_to
    watched, reads = _first_reads(keys, report, likely)

    async def body(pipe: Pipeline) -> tuple[TakenIn, int]:  # and the surge reads queued last
        done, *open_now = await watch_and_read(pipe, watched, *reads)
        likely_row = open_now.pop() if likely else None
        if done:
            pipe.multi()
            pipe.hdel(keys.outbox(), report.id)
            pipe.zrem(keys.outbox_times(), report.id)
            return TakenIn(done["incident"], done["opened"] == "1", first_time=False), 0
        gone: list[str] = []
        if report.attach_to or not report.claim:
            current = report.attach_to or open_now[0]
        else:
            current, gone = await _same_claim(pipe, keys, report.claim, claims_key,
                                              claim_threshold)
        incident, holder = await _joinable(pipe, keys, current, report, window_s,
                                           likely_row if current == likely else None)
        if current and incident:
            pipe.multi()
            _queue_attach(pipe, keys, current, incident, report, area_path)
            result = TakenIn(current, opened=False, first_time=True)
        else:
            new_id = incident_id_for(await redis.incr(keys.incident_seq()))
            pipe.multi()
            _queue_open(pipe, keys, new_id, report)
            if report.claim:
                pipe.sadd(claims_key, new_id)
            elif not report.attach_to and not _newer(holder, report):
                # (an attachment to a closed incident opens a new one) The open incident of
                # its kind and area is now this one, unless the one there is open and has a
                # report newer than this: a report taken in late (resent from the outbox
                # after an outage) opens its own, and the situation's reports go on joining
                # the one that holds them.
                pipe.set(open_key, new_id)
            result = TakenIn(new_id, opened=True, first_time=True)
            outbox.queue(pipe, keys, {opened_message_id(new_id): (
                topics.INCIDENT_EVENTS.name, new_id, result.opened_event(report).to_bytes())},
                sent=False)
        if gone:
            pipe.srem(claims_key, *gone)
        return result, _queue_taken(pipe, keys, report, result, surge_path, surge_window_s)

    replies: list[Any] = []
    taken, surge_reads = await transact(redis, [], body, replies=replies)  # body watches
    if seen is not None:
        seen.saw(report, taken)
    if surge_reads:
        return dataclasses.replace(taken, surge_seen=replies[-surge_reads:])
    return taken


def _first_reads(keys: Keys, report: Report, likely: str | None
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """What the intake watches, and what it reads first (with the WATCH, in one round trip):
    the report's record, the open incident it may join unless it names its own, and the
    incident it most likely joins (`likely`: the one it names, or a guess), last. Pure."""
    report_key, open_key = keys.report(report.id), keys.open_incident(report.correlation_key())
    watched = [report_key, keys.open_claims(report.exercise) if report.claim else open_key]
    reads = [("HGETALL", report_key)]
    if not (report.attach_to or report.claim):
        reads.append(("GET", open_key))
    if likely:
        watched.append(keys.incident(likely))
        reads.append(("HGETALL", keys.incident(likely)))
    return watched, reads


async def _joinable(pipe: Pipeline, keys: Keys, current: str | None, report: Report,
                    window_s: float, row: dict[str, str] | None = None
                    ) -> tuple[Incident | None, Incident | None]:
    """The incident `current` when the report may join it, and `current` whether or not it
    may (watched from here on; `row`: read with the first reads, already watched)."""
    if not current:
        return None, None
    if row is None:
        (row,) = await watch_and_read(pipe, [keys.incident(current)],
                                      ("HGETALL", keys.incident(current)))
    if not row:
        return None, None
    incident = Incident.from_hash(row)
    attach = (incident.status in OPEN if report.attach_to or report.claim
              else joins(incident.status, incident.last_report_at, report.received_at,
                         window_s))
    return (incident if attach else None), incident


def _newer(holder: Incident | None, report: Report) -> bool:
    """Whether `holder` is open and has taken in a report received after `report`. Pure."""
    return (holder is not None and holder.status in OPEN
            and holder.last_report_at is not None
            and holder.last_report_at > report.received_at)


def _queue_taken(pipe: Pipeline, keys: Keys, report: Report, result: TakenIn,
                 surge_path: Sequence[str], surge_window_s: float) -> int:
    """Inside MULTI: the report taken in (its record, its incident's counts, the surge
    counts, its outbox entry gone), then the surge detector's reads, last, with this report
    counted (no round trip of their own); how many reads were queued."""
    _queue_counts(pipe, keys, result.incident_id, report)
    pipe.hset(keys.report(report.id), mapping={"incident": result.incident_id,
                                               "opened": "1" if result.opened else "0",
                                               "report": report.model_dump_json()})
    pipe.hdel(keys.outbox(), report.id)
    pipe.zrem(keys.outbox_times(), report.id)
    if not surge_path or report.exercise:
        return 0
    at = report.received_at.timestamp()
    queue_count(pipe, keys, report.kind, list(surge_path), at, surge_window_s)
    return queue_counts_read(pipe, keys, report.kind, surge_path, at, surge_window_s)


def _queue_counts(pipe: Pipeline, keys: Keys, incident_id: str, report: Report) -> None:
    """When the report came (the incident's trend) and, for a claim, its wording."""
    if report.claim:
        pipe.hset(keys.claim_variants(incident_id), report.id, report.claim)
    pipe.zadd(keys.report_times(incident_id), {report.id: report.received_at.timestamp()})


async def _same_claim(pipe: Pipeline, keys: Keys, claim: str, claims_key: str,
                      threshold: float) -> tuple[str | None, list[str]]:
    """(the open rumour this claim repeats or None, the ids in the open set that are not
    open any more). Reads run at once: `pipe` is watching, not queuing yet."""
    candidates = sorted(await pipe.smembers(claims_key))
    variants: dict[str, list[str]] = {}
    gone = []
    for incident_id in candidates:
        status = await pipe.hget(keys.incident(incident_id), "status")
        if status not in OPEN:
            gone.append(incident_id)
            continue
        variants[incident_id] = list((await pipe.hgetall(keys.claim_variants(incident_id))
                                      ).values())
    match = best_match(claim, variants, threshold)
    return (match.incident_id if match else None), gone


def _queue_open(pipe: Pipeline, keys: Keys, incident_id: str, report: Report) -> None:
    pipe.hset(keys.incident(incident_id), mapping=opened(incident_id, report).to_hash())
    pipe.zadd(keys.incidents(), {incident_id: report.received_at.timestamp()})
    queue_audit(pipe, keys, AuditEvent(
        at=report.received_at, actor=report.actor,
        action="incident.opened", interface=report.received_via, incident_id=incident_id,
        subject=report.id, detail={"kind": report.kind, "severity": report.severity.value,
                                   "area": report.area, "title": report.title,
                                   **_claim_detail(report),
                                   **({"reporter": report.reporter} if report.reporter else {}),
                                   **({"exercise": True, "drill_list": report.drill_list}
                                      if report.exercise else {})},
    ))


def _queue_attach(pipe: Pipeline, keys: Keys, incident_id: str, incident: Incident,
                  report: Report, area_path: AreaPath) -> None:
    in_scope = may_raise_severity(report.source.scope if report.source else "",
                                  area_path(incident.area))
    pipe.hset(keys.incident(incident_id), mapping=attached(incident, report, in_scope))
    pipe.hincrby(keys.incident(incident_id), "report_count", 1)
    queue_audit(pipe, keys, AuditEvent(
        at=report.received_at, actor=report.actor,
        action="incident.report_attached", interface=report.received_via,
        incident_id=incident_id, subject=report.id,
        detail={"severity": report.severity.value, "title": report.title,
                **_claim_detail(report),
                **({"reporter": report.reporter} if report.reporter else {}),
                **({"severity_held": "filed outside the filer's area"}
                   if not in_scope and attached(incident, report) != attached(
                       incident, report, in_scope) else {})},
    ))


def _claim_detail(report: Report) -> dict[str, object]:
    return ({"claim": report.claim, "spreading": report.spreading, "area": report.area}
            if report.claim else {})
