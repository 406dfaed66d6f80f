"""A statement's publication is one transaction (a private redis-server): on the public pages
and recorded as published together, once; an incident in no state to publish gets nothing
public."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.errors import IncidentTransitionError
from coordinator.events import Statement
from coordinator.model.incident import Incident, IncidentStatus, Severity
from coordinator.runtime import Runtime
from coordinator.statements.publication import publish_statement

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


async def _incident(rt: Runtime, status: IncidentStatus) -> Statement:
    incident = Incident(id="INC-20261206-0001", kind="flood", area="hn-ba-dinh",
                        severity=Severity.severe, title="Ngập sâu", details="", status=status,
                        opened_at=NOW, last_report_at=NOW, updated_at=NOW, playbook="flood")
    await rt.redis.hset(rt.keys.incident(incident.id), mapping=incident.to_hash())
    return Statement(id="STM-20261206-0001-1", incident_id=incident.id,
                     approval_id="APR-20261206-0001-1", draft_id="d", playbook_id="flood",
                     kind="flood", severity=Severity.severe, area="hn-ba-dinh", texts=[],
                     approved_by=["nguyen-van-an"], approved_at=NOW)


async def test_a_statement_is_published_once(rt: Runtime) -> None:
    statement = await _incident(rt, IncidentStatus.approved)
    assert await publish_statement(rt, statement, NOW)
    assert not await publish_statement(rt, statement, NOW + timedelta(seconds=5))
    stored = await rt.redis.hgetall(rt.keys.statement(statement.id))
    assert stored["published_at"] == stored["announced"] == NOW.isoformat()
    assert Statement.model_validate_json(stored["statement"]) == statement
    assert await rt.redis.zrange(rt.keys.statements_published(), 0, -1, withscores=True) == [
        (statement.id, NOW.timestamp())]
    incident = await rt.redis.hgetall(rt.keys.incident(statement.incident_id))
    assert incident["status"] == "published"
    actions = [e for e in await rt.redis.xrange(rt.keys.audit())
               if '"statement.published"' in e[1]["event"]]
    assert len(actions) == 1


async def test_a_drill_is_published_apart(rt: Runtime) -> None:
    statement = (await _incident(rt, IncidentStatus.approved)).model_copy(
        update={"exercise": True})
    assert await publish_statement(rt, statement, NOW)
    assert await rt.redis.zrange(rt.keys.exercises_published(), 0, -1) == [statement.id]
    assert await rt.redis.zcard(rt.keys.statements_published()) == 0


async def test_an_incident_in_no_state_to_publish_gets_nothing_public(rt: Runtime) -> None:
    statement = await _incident(rt, IncidentStatus.awaiting_approval)
    with pytest.raises(IncidentTransitionError, match="cannot be published"):
        await publish_statement(rt, statement, NOW)
    assert await rt.redis.hgetall(rt.keys.statement(statement.id)) == {}
    assert await rt.redis.zcard(rt.keys.statements_published()) == 0
    assert await rt.redis.xlen(rt.keys.audit()) == 0
