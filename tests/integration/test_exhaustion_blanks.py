"""A chain exhausted under `on_exhausted: publish` never publishes a draft that still has
blanks: it holds it, and says why (a private redis-server, one transition)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from coordinator.approvals.escalate import fire_deadline
from coordinator.events import Draft, RenderedText, Severity
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import Incident, IncidentStatus
from coordinator.runtime import Runtime
from tests.unit.factories import T0, make_request, record_at

pytestmark = pytest.mark.integration


async def exhaust(rt: Runtime, body: str) -> tuple[str, ApprovalRecord, dict[str, str]]:
    """File an extreme request whose playbook publishes on exhaustion, with a draft saying
    `body`, and pass its only deadline: (what fired, the record, the incident)."""
    request = make_request([["a1"]], within_s=60, on_exhausted="publish",
                           severity=Severity.extreme)
    await rt.redis.hset(rt.keys.approval(request.id),
                        mapping=record_at(request, 1, request.deadline, ["a1"]).to_hash())
    draft = Draft(id=request.draft_id, incident_id=request.incident_id, playbook_id="p",
                  version=1, texts=[RenderedText(channel="web", language="vi",
                                                 title="Cải chính", body=body)])
    await rt.redis.set(rt.keys.draft(draft.id), draft.model_dump_json())
    incident = Incident(id=request.incident_id, kind="misinformation", area="hn-ba-dinh",
                        severity=Severity.extreme, title="Tin đồn", details="",
                        status=IncidentStatus.awaiting_approval, opened_at=T0,
                        last_report_at=T0, updated_at=T0, playbook="p",
                        approval_id=request.id, draft_id=draft.id)
    await rt.redis.hset(rt.keys.incident(incident.id), mapping=incident.to_hash())
    fired = await fire_deadline(rt, request.id, 1, request.deadline + timedelta(seconds=1))
    record = ApprovalRecord.from_hash(await rt.redis.hgetall(rt.keys.approval(request.id)))
    return fired.action, record, await rt.redis.hgetall(rt.keys.incident(incident.id))


async def test_a_draft_with_a_blank_is_held_not_published(rt: Runtime) -> None:
    action, record, incident = await exhaust(rt, "Sự thật: [[Sở Y tế ghi rõ sự thật]]")
    assert action == "exhausted: held" and record.phase == "held"
    assert record.status == "pending" and not incident.get("statement_id")
    assert incident["status_reason"] == ("approval chain exhausted: statement held until "
                                         "someone decides (its draft still has blanks to "
                                         "fill in)")


async def test_a_filled_draft_is_published_by_the_rule(rt: Runtime) -> None:
    action, record, incident = await exhaust(rt, "Sự thật: nước an toàn. Nguồn: Sở Y tế.")
    assert action == "exhausted: published" and record.status == "approved"
    assert incident["status"] == "approved"
