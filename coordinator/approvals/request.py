"""Plan an opened incident: pick its playbook, render the draft, request approval.

One compare-and-set on the incident: a replayed event finds the plan made and
returns the same approval request, so nothing is drafted or requested twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from coordinator.approvals.chain import first_deadline, snapshot_chain
from coordinator.drafts.render import IncidentFacts, render_draft
from coordinator.errors import TemplateRenderError
from coordinator.events import ApprovalRequest, AuditEvent, Draft, Severity
from coordinator.playbooks.selection import select_playbook
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact


@dataclass(frozen=True)
class Plan:
    """What planning decided (or found already decided)."""

    incident_id: str
    playbook_id: str
    request: ApprovalRequest | None
    first_time: bool


def ids_for(incident_id: str, version: int) -> tuple[str, str, str]:
    """(draft, approval, statement) ids of a draft version: DRF-00042-1, APR-00042-1, ..."""
    number = incident_id.removeprefix("INC-")
    return (f"DRF-{number}-{version}", f"APR-{number}-{version}", f"STM-{number}-{version}")


def facts_of(incident: dict[str, str]) -> IncidentFacts:
    """The template facts of a stored incident."""
    return IncidentFacts(
        id=incident["id"], kind=incident["kind"], severity=Severity(incident["severity"]),
        title=incident["title"], details=incident["details"], area=incident["area"],
        report_count=int(incident.get("report_count", 1)),
    )


async def plan_incident(rt: Runtime, incident_id: str, now: datetime) -> Plan:
    """Select, draft and request approval once; raises KeyError for an unknown incident."""
    key = rt.keys.incident(incident_id)

    async def body(pipe: Pipeline) -> Plan:
        incident = await pipe.hgetall(key)
        if not incident:
            raise KeyError(incident_id)
        if incident["playbook"]:
            return await _existing_plan(pipe, rt, incident)
        facts = facts_of(incident)
        selection = select_playbook(rt.playbooks, facts.kind, facts.severity, facts.area, rt.city)
        playbook = rt.playbooks[selection.playbook_id]
        draft_id, approval_id, _ = ids_for(incident_id, 1)
        audit = _auditor(pipe, rt, incident_id, now)
        try:
            texts = render_draft(playbook, facts, rt.city, now, rt.settings.timezone)
        except TemplateRenderError as exc:
            pipe.multi()
            pipe.hset(key, mapping={"playbook": playbook.id, "status": "needs_duty_officer",
                                    "status_reason": str(exc), "updated_at": now.isoformat()})
            audit("draft.failed", playbook.id, {"error": str(exc)})
            return Plan(incident_id, playbook.id, None, first_time=True)
        draft = Draft(id=draft_id, incident_id=incident_id, playbook_id=playbook.id, version=1,
                      texts=texts, rendered_at=now)
        pipe.multi()
        audit("playbook.selected", playbook.id, {"reason": selection.reason})
        pipe.set(rt.keys.draft(draft_id), draft.model_dump_json())
        audit("draft.rendered", draft_id, {"version": 1, "texts": len(texts)})
        fields: dict[str, str] = {"playbook": playbook.id, "draft_id": draft_id,
                                  "updated_at": now.isoformat()}
        request = None
        if playbook.fallback or playbook.approval is None:
            fields |= {"status": "needs_duty_officer", "status_reason": selection.reason}
        else:
            chain = snapshot_chain(playbook, rt.city)
            request = ApprovalRequest(
                id=approval_id, incident_id=incident_id, draft_id=draft_id,
                playbook_id=playbook.id, severity=facts.severity, chain=chain,
                deadline=first_deadline(chain, now), on_exhausted=playbook.approval.on_exhausted,
                created_at=now,
            )
            pipe.hset(rt.keys.approval(approval_id), mapping={
                "request": request.model_dump_json(), "status": "pending", "level": 1,
                "approved_by": "[]"})
            pipe.zadd(rt.keys.approvals_pending(), {approval_id: request.deadline.timestamp()})
            pipe.zadd(rt.keys.approvals(), {approval_id: now.timestamp()})
            fields |= {"status": "awaiting_approval", "approval_id": approval_id}
            audit("approval.requested", approval_id, {
                "level": 1, "approvers": chain[0].approvers, "department": chain[0].department,
                "deadline": request.deadline.isoformat()})
        pipe.hset(key, mapping=fields)
        return Plan(incident_id, playbook.id, request, first_time=True)

    return await transact(rt.redis, [key], body)


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
