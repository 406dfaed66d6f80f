"""What one event that cannot be handled must not do to the others: the sweep, the net
under the escalation timers, fires every request overdue by more than a second, even
behind one that cannot be fired; a report refused for good is not resent for good. Real
Redis, the worker's pipeline without a broker."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from coordinator import topics
from coordinator.app import handle_safely
from coordinator.city import Absence
from coordinator.events import DeadLetter, Report, Severity, utcnow
from coordinator.model.approval import ApprovalRecord
from coordinator.pipeline import Pipeline
from coordinator.reports.filing import record_report
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


async def test_a_report_refused_for_good_is_dead_lettered_and_no_longer_kept(
        rt: Runtime) -> None:
    """Accepted by a web whose city still had its area (a map changed since, a kind
    removed): the worker refuses it for good. Once its dead letter keeps it with the
    reason, it leaves the outbox: kept, it was sent again and refused again every resend
    round, for good. A report the worker takes in is unaffected."""
    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        pass

    letters: list[DeadLetter] = []

    async def dead_letter(letter: DeadLetter) -> None:
        assert await rt.redis.hexists(rt.keys.outbox(), "token:t:gone")  # kept until now
        letters.append(letter)

    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    gone = Report(id="token:t:gone", kind="flood", severity=Severity.severe,
                  area="hn-ba-dinh-kim-ma-cu", title="Ngập", received_at=utcnow())
    fine = gone.model_copy(update={"id": "token:t:fine", "area": "hn-ba-dinh"})
    for report in (gone, fine):
        await record_report(rt.redis, rt.keys, report)
    await handle_safely(topics.REPORTS, b"k", gone.to_bytes(), pipeline.intake, dead_letter)
    [letter] = letters
    assert letter.reason.startswith("BadEvent: area: ") and "hn-ba-dinh-kim-ma-cu" in (
        letter.value)
    assert not await rt.redis.hexists(rt.keys.outbox(), gone.id)
    assert await rt.redis.zscore(rt.keys.outbox_times(), gone.id) is None
    assert await rt.redis.hexists(rt.keys.outbox(), fine.id)
    await handle_safely(topics.REPORTS, b"k", fine.to_bytes(), pipeline.intake, dead_letter)
    assert len(letters) == 1 and not await rt.redis.hexists(rt.keys.outbox(), fine.id)
