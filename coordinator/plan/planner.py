"""Plan an opened incident: pick its playbook, render the draft, request approval.

One compare-and-set on the incident: a replayed event finds the plan made and
returns the same approval request, so nothing is drafted or requested twice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import ExecAbortError, NoScriptError

from coordinator import queries
from coordinator.access import may_publish_on_exhaustion
from coordinator.approvals.chain import snapshot_chain
from coordinator.dispatch.reach import ReachInputs, kept_record, queue_reach_kept
from coordinator.errors import TemplateRenderError
from coordinator.escalation.policy import enter_level
from coordinator.events import ApprovalRequest, AuditEvent, Draft, ExhaustionRule, Severity
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import (
    Incident,
    IncidentStatus,
    draft_failed,
    handed_to_duty_officer,
    ids_for,
    sent_for_approval,
)
from coordinator.plan.selection import Selection, select_playbook
from coordinator.playbooks.models import Playbook
from coordinator.playbooks.render import IncidentFacts, facts_of, render_draft
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Script, queue_audit, transact, watch_and_read


@dataclass(frozen=True)
class Plan:
    """What planning decided (or found already decided)."""

    incident_id: str
    playbook_id: str
    request: ApprovalRequest | None
    first_time: bool
    # What was just drafted, what its reach is counted from, and the request's record with
    # its reach, as the plan's transaction left it (None: read them back).
    draft: Draft | None = None
    reach: ReachInputs | None = None
    record: dict[str, str] | None = None


async def plan_incident(rt: Runtime, incident_id: str, now: datetime) -> Plan:
    """Select, draft and request approval once; raises KeyError for an unknown incident.
    The request's reach is counted and kept on it in the same transaction."""
    key = rt.keys.incident(incident_id)
    made: list[Plan] = []

    async def body(pipe: Pipeline) -> Plan:
        (incident,) = await watch_and_read(pipe, [key], ("HGETALL", key))
        if not incident:
            raise KeyError(incident_id)
        current = Incident.from_hash(incident)
        if current.playbook or current.status == IncidentStatus.closed:
            return await _existing_plan(pipe, rt, incident)
        facts = dataclasses.replace(
            facts_of(incident), link=f"{rt.settings.web_url()}/s/{ids_for(incident_id, 1)[2]}")
        selection = choose_playbook(rt, facts, incident.get("chosen_playbook") or None)
        playbook = rt.playbooks[selection.playbook_id]
        draft_id = ids_for(incident_id, 1)[0]
        spreading = (await queries.spreading_of(rt.redis, rt.keys, incident_id)
                     if current.claim else [])
        audit = _auditor(pipe, rt, incident_id, now)
        try:
            texts = render_draft(playbook, facts, rt.city, now, rt.settings.timezone)
        except TemplateRenderError as exc:
            failed = draft_failed(current, playbook.id, str(exc), now)
            pipe.multi()
            pipe.hset(key, mapping=failed)
            audit("draft.failed", playbook.id, {"error": str(exc)})
            return Plan(incident_id, playbook.id, None, first_time=True)
        draft = Draft(id=draft_id, incident_id=incident_id, playbook_id=playbook.id, version=1,
                      texts=texts, rendered_at=now, fact=facts.fact,
                      fact_source=facts.fact_source, spreading=spreading)
        pipe.multi()
        audit("playbook.selected", playbook.id, {"reason": selection.reason})
        request = queue_version(pipe, rt, incident, playbook, draft, selection.reason, now)
        reach = ReachInputs(incident_id, facts.area, facts.kind,
                            [t for t in texts if t.channel == "sms"], facts.exercise,
                            incident.get("drill_list") or None)
        if request is not None:
            queue_reach_kept(pipe, rt.keys, rt.city, request.id, reach)  # queued last
        made.append(Plan(incident_id, playbook.id, request, first_time=True, draft=draft,
                         reach=reach))
        return made[-1]

    replies: list[Any] = []
    try:
        plan = await transact(rt.redis, [], body, replies=replies)  # the body watches
    except NoScriptError as exc:  # all but the reach was written: the caller counts it apart
        Script.forget_loaded()
        if isinstance(exc.__cause__, ExecAbortError):  # refused whole: nothing was written
            raise
        return made[-1]
    if plan.first_time and plan.request is not None:
        return dataclasses.replace(plan, record=kept_record(replies[-1]))
    return plan


def choose_playbook(rt: Runtime, facts: IncidentFacts, chosen: str | None) -> Selection:
    """The duty officer's choice when they made one (and it exists), else the rules'."""
    if chosen and chosen in rt.playbooks:
        return Selection(chosen, "chosen by the duty officer", [])
    return select_playbook(rt.playbooks, facts.kind, facts.severity, facts.area, rt.city)


def queue_version(pipe: Pipeline, rt: Runtime, incident: dict[str, str], playbook: Playbook,
                  draft: Draft, reason: str, now: datetime) -> ApprovalRequest | None:
    """Inside MULTI: store a draft version and request its approval (or hand it to the duty
    officer when the playbook asks nobody). Returns the request, if one was made."""
    incident_id = incident["id"]
    audit = _auditor(pipe, rt, incident_id, now)
    pipe.set(rt.keys.draft(draft.id), draft.model_dump_json())
    over = [f"{t.language}: {t.segments} segments, budget {t.segment_budget}"
            for t in draft.texts
            if t.segments and t.segment_budget and t.segments > t.segment_budget]
    audit("draft.rendered", draft.id, {"version": draft.version, "texts": len(draft.texts),
                                       "purpose": draft.purpose, "msg_type": draft.msg_type,
                                       **({"by": draft.author} if draft.author else {}),
                                       **({"sms_over_budget": over} if over else {})})
    current = Incident.from_hash(incident)
    request = None
    if playbook.fallback or playbook.approval is None:
        fields = handed_to_duty_officer(current, playbook.id, draft.id, reason, now)
    else:
        severity = Severity(incident["severity"])
        rule, why = exhaustion_for(playbook, incident, draft)
        record, notes = first_record(rt, playbook, severity, incident_id, draft.id, now,
                                     draft.version, on_exhausted=rule)
        notes = [*why, *notes]
        request = record.request
        pipe.hset(rt.keys.approval(request.id), mapping=record.to_hash())
        pipe.zadd(rt.keys.approvals_pending(), {request.id: request.deadline.timestamp()})
        pipe.zadd(rt.keys.approvals(), {request.id: now.timestamp()})
        fields = sent_for_approval(current, playbook.id, draft.id, request.id, now)
        level = record.current_level
        audit("approval.requested", request.id, {
            "level": record.level, "holders": record.holders,
            "department": level.department, "deadline": request.deadline.isoformat(),
            "notes": notes})
    pipe.hset(rt.keys.incident(incident_id), mapping=fields)
    return request


def exhaustion_for(playbook: Playbook, incident: dict[str, str], draft: Draft | None = None
                   ) -> tuple[ExhaustionRule, list[str]]:
    """The exhaustion rule frozen into a request: `publish` only for an incident opened by
    an authenticated reporter whose scope the playbook grants it (`publish_for`), and not
    for a translator's version of the draft (a translator changes nothing else: their
    words go out only once someone approves them), else `hold` (promise 7: no timer
    publishes unverified words). Pure."""
    assert playbook.approval is not None
    rule = playbook.approval.on_exhausted
    if rule != "publish":
        return rule, []
    if draft is not None and draft.note == "translation":
        return "hold", [f"`publish` on exhaustion does not apply: version {draft.version} is "
                        f"a translation by {draft.author or 'a translator'}, which goes out "
                        "only once approved: holding for a decision instead"]
    scope = incident.get("source_scope", "")
    grants = playbook.approval.publish_for
    if "severity_scope" in incident and not may_publish_on_exhaustion(
            grants, incident["severity_scope"], True):
        return "hold", [f"`publish` on exhaustion does not apply: the severity was raised by a "
                        f"report from {incident['severity_scope'] or 'the whole city'}, which "
                        f"playbook {playbook.id} does not name in publish_for: holding for a "
                        "decision instead"]
    if may_publish_on_exhaustion(grants, scope, incident.get("source_verified") == "1"):
        return rule, []
    return "hold", [f"`publish` on exhaustion does not apply: the incident was opened by "
                    f"{incident.get('source_actor') or 'an unverified source'}"
                    f"{' (' + scope + ')' if scope else ''}, which playbook {playbook.id} does "
                    "not name in publish_for: holding for a decision instead"]


def first_record(rt: Runtime, playbook: Playbook, severity: Severity, incident_id: str,
                 draft_id: str, now: datetime, version: int = 1,
                 on_exhausted: ExhaustionRule = "hold") -> tuple[ApprovalRecord, list[str]]:
    """The new request, at the first level with someone available to ask, and what was
    routed around to get there (absences, delegates, skipped levels).

    When nobody in the whole chain is available, the request is due at once at its last
    level, so the first timer applies the exhaustion rule."""
    assert playbook.approval is not None
    approval_id = ids_for(incident_id, version)[1]
    chain = snapshot_chain(playbook, rt.city, severity)
    base = ApprovalRequest(
        id=approval_id, incident_id=incident_id, draft_id=draft_id, playbook_id=playbook.id,
        severity=severity, chain=chain, deadline=now, on_exhausted=on_exhausted,
        hold_alert_every_s=playbook.approval.hold_alert_every, created_at=now,
    )
    entry, notes = enter_level(base, 1, rt.city.people, now)
    level, holders, deadline = ((entry.level, entry.holders, entry.deadline) if entry
                                else (len(chain), [], now))
    request = base.model_copy(update={"level": level, "deadline": deadline})
    return ApprovalRecord(request=request, status="pending", phase="level", level=level,
                          due=deadline, holders=holders, eligible=holders,
                          level_holders={level: holders} if entry else {}), notes


async def _existing_plan(pipe: Pipeline, rt: Runtime, incident: dict[str, str]) -> Plan:
    request = None
    if incident.get("approval_id"):
        raw = await pipe.hget(rt.keys.approval(incident["approval_id"]), "request")
        request = ApprovalRequest.model_validate_json(raw) if raw else None
    return Plan(incident["id"], incident["playbook"], request, first_time=False)


def _auditor(pipe: Pipeline, rt: Runtime, incident_id: str, now: datetime):  # type: ignore[no-untyped-def]
    def audit(action: str, subject: str, detail: dict[str, object]) -> None:
        queue_audit(pipe, rt.keys, AuditEvent(
            at=now, actor=rt.settings.worker_id, action=action, interface="worker",
            incident_id=incident_id, subject=subject, detail=json.loads(json.dumps(detail)),
        ))
    return audit
