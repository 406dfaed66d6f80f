"""The sweep, the safety net under the escalation timers: every request overdue by more
than a second is fired, even behind one that cannot be (a record that cannot be read, or
whose transition fails every time). Real Redis, the worker's pipeline without a broker."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from coordinator import topics
from coordinator.city import Absence
from coordinator.events import Report, Severity, utcnow
from coordinator.model.approval import ApprovalRecord
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime


async def test_a_request_that_cannot_be_fired_does_not_hold_up_those_behind_it(
        rt: Runtime) -> None:
    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        pass

    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    report = Report(id="token:t:1", kind="flood", severity=Severity.severe,
                    area="hn-ba-dinh", title="Ngập sâu", received_at=utcnow())
    await pipeline.intake(report.to_bytes())
    while pipeline.at_once.tasks:  # the plan, then the prompts it starts
        await asyncio.wait(set(pipeline.at_once.tasks))
    [incident_id] = await rt.redis.zrange(rt.keys.incidents(), 0, -1)
    approval_id = await rt.redis.hget(rt.keys.incident(incident_id), "approval_id")
    record = ApprovalRecord.from_hash(await rt.redis.hgetall(rt.keys.approval(approval_id)))
    assert record.level == 1 and len(record.request.chain) > 1
    # Its deadline passed a minute ago and its timer job was lost; two older requests are
    # overdue too: one whose record cannot be read, one whose transition always fails.
    passed = utcnow() - timedelta(minutes=1)
    await rt.redis.hset(rt.keys.approval(approval_id), "due", passed.isoformat())
    await rt.redis.hset(rt.keys.approval("APR-BROKEN-1"),
                        mapping={"request": "{not json", "status": "pending", "level": "1"})
    # (its level 2 is someone away in a window without a UTC offset, as config/ could hold
    # one before it was refused at load: comparing it with the time now raises)
    someone = next(iter(rt.city.people.values()))
    rt.city.people["away-naive"] = someone.model_copy(update={"id": "away-naive", "absent": [
        Absence.model_construct(start=datetime(2026, 1, 1), until=datetime(2099, 1, 1))]})
    chain = [record.request.chain[0], record.request.chain[1].model_copy(
        update={"approvers": ["away-naive"]})]
    await rt.redis.hset(rt.keys.approval("APR-FAILS-1"), mapping=record.evolve(
        request=record.request.model_copy(update={"id": "APR-FAILS-1", "chain": chain}),
        due=passed).to_hash())
    await rt.redis.zadd(rt.keys.approvals_pending(), {
        "APR-BROKEN-1": passed.timestamp() - 20, "APR-FAILS-1": passed.timestamp() - 10,
        approval_id: passed.timestamp()})

    assert await pipeline.sweep() == 2  # the unreadable one is passed over, not counted
    moved = ApprovalRecord.from_hash(await rt.redis.hgetall(rt.keys.approval(approval_id)))
    assert moved.level == 2 and moved.phase == "level"
    assert moved.level_holders == {1: record.holders, 2: moved.holders}
