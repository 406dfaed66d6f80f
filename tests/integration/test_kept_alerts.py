"""Alerts to duty officers are kept with what they tell, and a late publication keeps no
promise (a private redis-server; the broker is a stand-in that refuses every message, as a
broker that is down does)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from redis.exceptions import RedisError

from coordinator import outbox, topics
from coordinator.approvals.escalate import prompt_message_id
from coordinator.at_once import AtOnce
from coordinator.dispatch.deliveries import deliver
from coordinator.dispatch.ledger import queue_open
from coordinator.dispatch.recovery import recover
from coordinator.doctor import _work as doctor_work
from coordinator.errors import BrokerUnavailable
from coordinator.events import (
    ApprovalPrompt,
    DeadLetter,
    DeliveryRequest,
    Report,
    Severity,
    Statement,
)
from coordinator.incidents.intake import take_in_report
from coordinator.incidents.surge import detect, queue_count, tell_duty_officers
from coordinator.model.approval import ApprovalRecord
from coordinator.model.incident import Incident, IncidentStatus
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime
from coordinator.statements.promises import sweep_promises
from coordinator.statements.publication import publish_statement
from coordinator.stuck_work import stuck_work

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def drainer(rt: Runtime, send: outbox.Send) -> outbox.Drainer:
    """A worker's drain that resends what it keeps at once (no wait after a send)."""
    return outbox.Drainer(rt.redis, rt.keys, send, first_wait_s=0)


async def broker_down(spec: topics.TopicSpec, key: str, value: bytes) -> None:
    raise BrokerUnavailable(f"{spec.name} refused")


def incident(status: IncidentStatus, **extra: object) -> Incident:
    return Incident(id="INC-20261204-0001", kind="flood", area="hn-ba-dinh",
                    severity=Severity.severe, title="Ngập sâu", details="", status=status,
                    opened_at=NOW, last_report_at=NOW, updated_at=NOW,
                    playbook="flood", **extra)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def an_officer_wants_sms(rt: Runtime) -> None:
    """One duty officer wants alerts by SMS (the demo's all watch the board)."""
    officer = rt.city.duty_officers["tran-thi-mai"]
    rt.city.duty_officers["tran-thi-mai"] = officer.model_copy(
        update={"preferred_channel": "sms"})


async def three_floods(rt: Runtime) -> list[str]:
    """Count three flood reports in Ba Đình now; the area path counted."""
    path = rt.city.ancestors("hn-ba-dinh")
    async with rt.redis.pipeline(transaction=True) as pipe:
        for _ in range(3):
            queue_count(pipe, rt.keys, "flood", path, NOW.timestamp(), 600)
        await pipe.execute()
    return path


async def pending_ids(rt: Runtime) -> set[str]:
    return set(await rt.redis.hkeys(rt.keys.deliveries_pending()))


async def test_a_surge_raised_while_the_broker_is_down_keeps_its_messages(rt: Runtime) -> None:
    path = await three_floods(rt)
    surge = await detect(rt.redis, rt.keys, rt.city, "flood", path, NOW, 600, 3)
    assert surge is not None and surge.area == "hn-ba-dinh" and surge.count == 3
    assert await tell_duty_officers(rt.city, surge, broker_down) == 0
    assert await pending_ids(rt) == {f"alert-{surge.id}-tran-thi-mai-sms"}
    # Raised once: a second look in the same window raises and keeps nothing more.
    assert await detect(rt.redis, rt.keys, rt.city, "flood", path, NOW, 600, 3) is None
    assert await pending_ids(rt) == {f"alert-{surge.id}-tran-thi-mai-sms"}


async def test_a_broken_promise_flagged_while_the_broker_is_down_keeps_its_messages(
        rt: Runtime) -> None:
    due = NOW - timedelta(minutes=1)
    row = incident(IncidentStatus.published, exercise=True,
                   published=("STM-20261204-0001-1",),
                   draft_id="DRF-20261204-0001-1").to_hash()
    await rt.redis.hset(rt.keys.incident(row["id"]),
                        mapping={**row, "next_update_by": due.isoformat()})
    await rt.redis.zadd(rt.keys.promises(), {row["id"]: due.timestamp()})
    told = await sweep_promises(rt, broker_down, NOW)
    assert told == 1
    assert await rt.redis.hget(rt.keys.incident(row["id"]), "promise_broken") == due.isoformat()
    kept = await rt.redis.hgetall(rt.keys.deliveries_pending())
    supervisor = f"alert-promise-{row['id']}-{int(due.timestamp())}-broken-ha-thi-phuong-sms"
    assert supervisor in kept
    request = json.loads(json.loads(kept[supervisor])["request"])
    assert request["text"].startswith("[DIỄN TẬP] Loa: QUÁ HẠN")  # a drill's says so
    assert "A draft update is ready in the console." in request["text"]
    # Loa drafted the update from the playbook: marked as a drill, with what it must cover.
    prepared = json.loads(await rt.redis.get(rt.keys.prepared_update(row["id"])))
    assert (prepared["due"], prepared["covers"], prepared["playbook"]) == (
        due.isoformat(), "Update on water levels and road closures", "flood")
    sms = [t for t in prepared["texts"] if t["channel"] == "sms" and t["language"] == "vi"]
    assert sms and sms[0]["body"].startswith("[DIỄN TẬP] [Loa Hà Nội] Ngập úng")
    assert sms[0]["body"].endswith("/s/STM-20261204-0001-2")  # the next version's statement
    # Flagged once: the next sweep tells nobody again.
    assert await sweep_promises(rt, broker_down, NOW) == 0


async def test_a_statement_published_after_its_incident_closed_promises_nothing(
        rt: Runtime) -> None:
    closed = incident(IncidentStatus.closed, closed_at=NOW)
    await rt.redis.hset(rt.keys.incident(closed.id), mapping=closed.to_hash())
    statement = Statement(id=f"STM-{closed.id[4:]}-1", incident_id=closed.id,
                          approval_id=f"APR-{closed.id[4:]}-1", draft_id="d", playbook_id="flood",
                          kind="flood", severity=Severity.severe, area="hn-ba-dinh", texts=[],
                          approved_by=["nguyen-van-an"], approved_at=NOW)
    assert await publish_statement(rt, statement, NOW + timedelta(seconds=5))
    stored = await rt.redis.hgetall(rt.keys.incident(closed.id))
    assert stored["status"] == "closed" and "next_update_by" not in stored
    assert await rt.redis.zscore(rt.keys.promises(), closed.id) is None
    assert "next_update_by" not in await rt.redis.hgetall(rt.keys.statement(statement.id))
    # The flood playbook does promise one after a first statement of an open incident.
    assert rt.playbooks["flood"].follow_ups[0].after == 7200


async def test_recovery_keeps_an_alert_the_broker_refuses_again_and_sends_it_later(
        rt: Runtime) -> None:
    surge = await detect(rt.redis, rt.keys, rt.city, "flood", await three_floods(rt), NOW,
                         600, 3)
    assert surge is not None
    kept = f"alert-{surge.id}-tran-thi-mai-sms"
    assert (await recover(rt, broker_down, pending_s=0)).deliveries_sent_again == 0
    assert await pending_ids(rt) == {kept}  # refused again: still kept
    await rt.redis.delete(rt.keys.recovery_lock())
    sent: list[str] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(key)

    done = await recover(rt, broker_up, pending_s=0)
    assert done.deliveries_sent_again == 1 and sent == [kept]


async def test_a_record_recovery_cannot_read_holds_up_no_other(rt: Runtime) -> None:
    """A fan-out whose statement, and a kept delivery whose request, this release cannot
    read (a newer release's, rolled back): each is passed over, and what comes after it in
    the same round is still sent again."""
    surge = await detect(rt.redis, rt.keys, rt.city, "flood", await three_floods(rt), NOW,
                         600, 3)
    assert surge is not None
    kept = f"alert-{surge.id}-tran-thi-mai-sms"
    async with rt.redis.pipeline(transaction=True) as pipe:
        queue_open(pipe, rt.keys, "STM-00001-1", 1.0)  # opened long ago, never moved since
        pipe.hset(rt.keys.statement("STM-00001-1"), "statement", '{"type": "statement", '
                  '"from_a_newer_release": true}')
        pipe.hset(rt.keys.deliveries_pending(), "aaa-newer-release", json.dumps(
            {"at": 1.0, "request": '{"type": "delivery.request", "purpose": "newer"}'}))
        await pipe.execute()
    sent: list[str] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(key)

    done = await recover(rt, broker_up, pending_s=0)
    assert (done.fan_outs_resumed, done.deliveries_sent_again, sent) == (0, 1, [kept])
    assert await pending_ids(rt) == {kept, "aaa-newer-release"}  # kept, not forgotten


def a_prompt(channel: str = "sms") -> ApprovalPrompt:
    return ApprovalPrompt(id="APR-20261204-0001-1:request:nguyen-van-an", kind="request",
                          approval_id="APR-20261204-0001-1", incident_id="INC-20261204-0001",
                          level=1, person_id="nguyen-van-an", person_name="Nguyễn Văn An",
                          channel=channel, phone="+84901000101", email="", deadline=None,
                          text="Ngập sâu: duyệt?")  # type: ignore[arg-type]


async def test_a_prompt_handled_at_once_is_kept_until_then(rt: Runtime) -> None:
    """The planner keeps a prompt in Redis before handling it beside itself: cut off before
    it began (a worker stopped at that moment), the prompt is still there for the drain,
    which puts it on `approval-events`."""
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    prompt = a_prompt()
    await pipeline._send_prompts([prompt])
    assert await pipeline.at_once.finish(0) == 1  # cut off: nothing of it ran
    assert sent == []
    assert await outbox.waiting(rt.redis, rt.keys) == [
        (f"prompt:{prompt.id}", pytest.approx(0, abs=5), 0)]  # kept, never sent
    assert await drainer(rt, broker_up).round() == 1
    assert sent == [("approval-events", prompt.incident_id)]
    [(_, _, sends)] = await outbox.waiting(rt.redis, rt.keys)
    assert sends == 1  # its first send: five more before it would become a dead letter


async def test_work_done_at_once_that_fails_goes_on_its_topic(rt: Runtime) -> None:
    """Failed beside its handler, the work's message goes on its topic (whose handler
    retries it); with the broker down too, it stays kept, and the drain sends it later."""
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    async def fails() -> None:
        raise RedisError("Redis went away")

    prompt = a_prompt()
    mid, key, value = prompt_message_id(prompt.id), prompt.incident_id, prompt.to_bytes()
    await outbox.keep(rt.redis, rt.keys, {mid: (topics.APPROVAL_EVENTS.name, key, value)})
    up = Pipeline(rt, {}, broker_up, lambda _timer: None)
    await up.at_once.start(fails(), topics.APPROVAL_EVENTS, key, value, mid)
    assert await up.at_once.finish(5) == 0
    assert sent == [("approval-events", key)]
    [(_, _, sends)] = await outbox.waiting(rt.redis, rt.keys)
    assert sends == 1  # noted as sent: the drain now waits for the topic's consumer
    down = Pipeline(rt, {}, broker_down, lambda _timer: None)
    await down.at_once.start(fails(), topics.APPROVAL_EVENTS, key, value)
    assert await down.at_once.finish(5) == 0  # ended: logged, nothing raised
    assert not down.at_once.tasks
    assert await rt.redis.hexists(rt.keys.followups(), mid)  # still kept ...
    assert await drainer(rt, broker_up).round() == 1
    assert sent == [("approval-events", key)] * 2  # ... and sent by the drain


def a_report(number: int, kind: str) -> Report:
    return Report(id=f"token:t:{number}", kind=kind, severity=Severity.severe,
                  area="hn-ba-dinh", title="Ngập sâu", received_at=NOW)


async def test_an_opened_incident_is_planned_at_once_and_kept_until_then(rt: Runtime) -> None:
    """The intake plans the incident a report opens beside itself: no message on
    `incident-events`, nor a request or prompt on `approval-events`, and nothing left kept.
    Taken in while the worker shuts down, the incident stays kept, and the drain puts it
    on `incident-events`, whose handler plans it and forgets it."""
    sent: list[tuple[str, str]] = []
    values: list[tuple[str, bytes]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))
        values.append((key, value))

    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    await pipeline.intake(a_report(1, "flood").to_bytes())
    while pipeline.at_once.tasks:  # the plan, then the prompts it starts
        await asyncio.wait(set(pipeline.at_once.tasks))
    [planned] = await rt.redis.zrange(rt.keys.incidents(), 0, -1)
    approval_id = await rt.redis.hget(rt.keys.incident(planned), "approval_id")
    record = ApprovalRecord.from_hash(await rt.redis.hgetall(rt.keys.approval(approval_id)))
    assert record.holders  # each was prompted: the prompt is in their inbox
    for person in record.holders:
        assert await rt.redis.hlen(rt.keys.inbox(person)) == 1
    assert sent == []
    assert await outbox.waiting(rt.redis, rt.keys) == []

    closing = Pipeline(rt, {}, broker_up, lambda _timer: None)
    assert await closing.at_once.finish(0) == 0  # shutting down: nothing more starts
    await closing.intake(a_report(2, "fire").to_bytes())
    [(mid, _, sends)] = await outbox.waiting(rt.redis, rt.keys)
    incident_id = mid.removeprefix("opened:")
    assert incident_id != planned
    assert sends == 0
    assert not await rt.redis.hget(rt.keys.incident(incident_id), "approval_id")
    assert await drainer(rt, broker_up).round() == 1
    assert sent == [("incident-events", incident_id)]


async def test_a_plan_forgets_its_opened_incident_as_it_keeps_its_prompts(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opened incident's kept message is forgotten in the transaction that keeps its
    request's prompts: a worker that dies right after that transaction leaves the prompts
    kept (the drain hands them on) and nothing that would plan the incident again."""
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    taken = await take_in_report(rt.redis, rt.keys, a_report(3, "flood"), 600.0)
    [(mid, _, _)] = await outbox.waiting(rt.redis, rt.keys)
    assert mid == f"opened:{taken.incident_id}"
    real_keep = outbox.keep

    async def keep_then_die(*args: Any, **kwargs: Any) -> None:
        await real_keep(*args, **kwargs)
        raise ConnectionError("the worker dies here")

    monkeypatch.setattr(outbox, "keep", keep_then_die)
    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    with pytest.raises(ConnectionError):
        await pipeline._plan_opened(taken.opened_event(a_report(3, "flood")))
    waiting = sorted(m for m, _, _ in await outbox.waiting(rt.redis, rt.keys))
    approval_id = await rt.redis.hget(rt.keys.incident(taken.incident_id), "approval_id")
    holders = ApprovalRecord.from_hash(
        await rt.redis.hgetall(rt.keys.approval(approval_id))).holders
    assert holders and len(waiting) == len(holders)
    assert all(m.startswith("prompt:") for m in waiting)  # not `opened:` any more
    assert sent == []


async def test_work_that_finds_no_room_at_once_goes_on_its_topic(rt: Runtime) -> None:
    """With as much of its kind under way as the limit allows, work goes on its topic at
    once (its caller does not wait for room), noted as sent where it is kept (the drain
    waits for its consumer from then on); other kinds still have theirs."""
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    release = asyncio.Event()
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)
        await release.wait()

    kept = {f"prompt:{n}": (topics.APPROVAL_EVENTS.name, f"INC-{n}", b"{}") for n in (1, 2)}
    await outbox.keep(rt.redis, rt.keys, kept)
    at_once = AtOnce(broker_up, (topics.APPROVAL_EVENTS, topics.DELIVERIES_SMS),
                     lambda kept: outbox.note_sent(rt.redis, rt.keys, kept), limit=1)
    await at_once.start(work("first"), topics.APPROVAL_EVENTS, "INC-1", b"{}", "prompt:1")
    await at_once.start(work("second"), topics.APPROVAL_EVENTS, "INC-2", b"{}", "prompt:2")
    await at_once.start(work("sms"), topics.DELIVERIES_SMS, "prompt:1", b"{}")
    await asyncio.sleep(0)
    assert ran == ["first", "sms"]
    assert sent == [("approval-events", "INC-2")]
    assert sorted(await outbox.waiting(rt.redis, rt.keys)) == [
        ("prompt:1", pytest.approx(0, abs=5), 0),  # under way: never sent
        ("prompt:2", pytest.approx(0, abs=5), 1)]  # on its topic: its first send
    release.set()
    assert await at_once.finish(5) == 0
    await at_once.start(work("late"), topics.APPROVAL_EVENTS, "INC-3", b"{}")  # shut down
    assert ran == ["first", "sms"]
    assert sent == [("approval-events", "INC-2")]  # kept in Redis, for after the restart


async def test_work_cut_off_at_shutdown_is_handed_on_only_for_its_kinds(rt: Runtime) -> None:
    """At shutdown, work of a kind handed on (a fan-out's first batch: kept only in its
    ledger) goes on its topic, cut off under way or met by the shutdown before it began;
    other kinds' work stays kept in Redis for after the restart."""
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    at_once = AtOnce(broker_up, (topics.DISPATCH_SMS, topics.DELIVERIES_SMS),
                     lambda kept: outbox.note_sent(rt.redis, rt.keys, kept),
                     hand_on=(topics.DISPATCH_SMS,))
    never = asyncio.Event()
    await at_once.start(never.wait(), topics.DISPATCH_SMS, "STM-1:0", b"{}")
    await at_once.start(never.wait(), topics.DELIVERIES_SMS, "d-1", b"{}")
    await asyncio.sleep(0)
    assert await at_once.finish(0) == 2  # both cut off under way
    assert sent == [("dispatch.sms", "STM-1:0")]
    await at_once.start(never.wait(), topics.DISPATCH_SMS, "STM-2:0", b"{}")
    await at_once.start(never.wait(), topics.DELIVERIES_SMS, "d-2", b"{}")
    assert sent == [("dispatch.sms", "STM-1:0"), ("dispatch.sms", "STM-2:0")]
    assert not at_once.tasks


async def test_a_kept_message_is_sent_again_less_often_then_parked_never_forgotten(
        rt: Runtime) -> None:
    """No consumer finishes it: the drain sends it again, waiting twice as long after each
    send; after MAX_SENDS sends it is parked (one dead letter says so, no more sends on a
    timer), and a worker's first round sends it once more. Its value comes back exactly as
    kept; only its consumer forgets it."""
    sent: list[bytes] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(value)

    value = json.dumps({"title": "Ngập sâu ở Giảng Võ 🌊", "path": "a/b", "x": {}}).encode()
    await outbox.keep(rt.redis, rt.keys, {"decision:1": ("decisions", "APR-1", value)})
    worker = drainer(rt, broker_up)
    for _ in range(outbox.MAX_SENDS):
        assert await worker.round() == 1
    assert await worker.round() == 0  # parked
    assert sent == [value] * outbox.MAX_SENDS
    [(_, fields)] = await rt.redis.xrange(rt.keys.dead_letters())
    assert json.loads(fields["letter"])["reason"].startswith(
        f"no consumer finished decision:1 after {outbox.MAX_SENDS} sends; parked")
    assert await drainer(rt, broker_up).round() == 1  # a worker that starts
    [(mid, _, sends)] = await outbox.waiting(rt.redis, rt.keys)
    # (a resend before it is due, for a start or a rebalance, is not counted)
    assert (mid, sends, sent[-1]) == ("decision:1", outbox.MAX_SENDS, value)
    assert len(await rt.redis.xrange(rt.keys.dead_letters())) == 1  # said once
    [kept] = [s for s in await stuck_work(rt.redis, rt.keys)
              if s.kind == "messages waiting for their consumer"]
    assert (kept.count, kept.detail.split(";")[:2]) == (
        1, [f"decision:1, sent {outbox.MAX_SENDS} time(s)", " 1 parked (sent again as a "
            "worker starts or rejoins, and hourly"])
    assert await worker.round() == 0
    entry = json.loads(await rt.redis.hget(rt.keys.followups(), "decision:1"))
    entry["at"] -= outbox.PARKED_WAIT_S  # an hour after its last send (a broker restarted
    await rt.redis.hset(rt.keys.followups(), "decision:1", json.dumps(entry))  # empty alone)
    assert await worker.round() == 1
    assert len(await rt.redis.xrange(rt.keys.dead_letters())) == 1
    await outbox.done(rt.redis, rt.keys, ["decision:1"])
    assert await outbox.sent(rt.redis, rt.keys, ["decision:1"]) == [0]  # finished: not back
    assert await outbox.waiting(rt.redis, rt.keys) == []


async def test_messages_that_cannot_be_sent_do_not_hold_up_the_others(
        rt: Runtime) -> None:
    """Kept messages this worker cannot send (a topic an older or newer Loa has, an entry
    it cannot read), however many, are logged once and skipped: the round goes on to the
    due ones after them, and a worker's parked messages count as sent once. They stay kept,
    for a worker that knows them or a person."""
    sent: list[str] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(key)

    now = time.time()
    for mid, (topic, key, sends) in {
            "decision:old": ("retired-topic", "old", 1), "decision:new": ("newer", "new", 1),
            "decision:odd": ("decisions", None, 1),
            "decision:parked": ("decisions", "parked", outbox.MAX_SENDS),
            "decision:due": ("decisions", "due", 1)}.items():
        entry = {"topic": topic, "key": key, "value": "{}", "at": now - 100, "sends": sends}
        if key is None:
            del entry["key"]
        await rt.redis.hset(rt.keys.followups(), mid, json.dumps(entry))
    await rt.redis.hset(rt.keys.followups(), "decision:torn", '{"topic": "decis')
    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None)
    with structlog.testing.capture_logs() as logs:
        assert await pipeline.drain_followups() == 2
        assert sorted(sent) == ["due", "parked"]
        assert pipeline.drainer.all_sent  # every due one sent: the parked one counts
        assert await pipeline.drain_followups() == 0
    assert sorted(line["id"] for line in logs
                  if line["event"].startswith("kept message this worker cannot send")) == [
        "decision:new", "decision:odd", "decision:old", "decision:torn"]  # once each
    assert await rt.redis.hlen(rt.keys.followups()) == 6  # all kept
    assert ("decision:torn", 0.0, -1) in await outbox.waiting(rt.redis, rt.keys)
    [kept] = [s for s in await stuck_work(rt.redis, rt.keys)
              if s.kind == "messages waiting for their consumer"]
    assert "; 1 unreadable (e.g. decision:torn;" in kept.detail
    assert kept.oldest_s == float("inf")  # `loa doctor` calls it stuck however young
    assert kept.line().startswith(
        "messages waiting for their consumer: 6, the oldest waiting an unknown time (")
    settings = rt.settings.model_copy(update={"redis_prefix": rt.keys.prefix})
    ok, said = await asyncio.to_thread(doctor_work, settings)  # as `loa doctor` says it
    assert not ok
    assert said.startswith("work stuck longer than 120 s or unreadable (is a worker running?")


async def test_a_parked_message_not_sent_comes_back_in_the_next_round(rt: Runtime) -> None:
    """A worker's first round whose send of a parked message fails does not count: the
    parked one waits a second (a failed send backs off), then goes out, and only then are
    the parked ones sent. New partitions send them again."""
    sent: list[str] = []
    refuse = {"parked"}

    async def flaky(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        if key in refuse:
            raise BrokerUnavailable(f"{spec.name} refused")
        sent.append(key)

    now = time.time()
    for key, sends in (("parked", outbox.MAX_SENDS), ("due", 1)):
        await rt.redis.hset(rt.keys.followups(), f"decision:{key}", json.dumps({
            "topic": "decisions", "key": key, "value": "{}", "at": now - 100,
            "sends": sends}))
    worker = drainer(rt, flaky)
    assert await worker.round() == 1
    assert (sent, worker.all_sent) == (["due"], False)
    refuse.clear()
    assert await worker.round() == 1  # the due one (wait 0) again; the parked one waits
    assert (sent, worker.all_sent) == (["due", "due"], False)
    await asyncio.sleep(1.05)
    assert await worker.round() == 2
    assert (sorted(sent), worker.all_sent) == (["due", "due", "due", "parked"], True)
    assert await worker.round() == 1  # the parked one waits an hour now
    worker.send_all_again()
    assert await worker.round() == 2
    assert worker.all_sent
    refuse.add("due")
    assert await worker.round() == 0  # refused: it waits a second now ...
    refuse.clear()
    assert await worker.round() == 0
    worker.send_all_again()  # ... unless the broker comes back
    assert await worker.round() == 2


async def test_a_round_stops_after_failed_sends_in_a_row_only(rt: Runtime) -> None:
    """Failed sends in a row stop a round after GIVE_UP_AFTER (a broker that refuses, or one
    that hangs past the drain's timeout); a send that goes through in between resets the
    count, so fail, fail, go, fail, fail, go all get their turn."""
    tried: list[str] = []

    async def refuses(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        tried.append(key)
        raise BrokerUnavailable(f"{spec.name} refused")

    async def hangs(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        tried.append(key)
        await asyncio.sleep(60)

    async def every_third_goes(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        tried.append(key)
        if len(tried) % 3:
            raise BrokerUnavailable(f"{spec.name} refused")

    for n in range(outbox.GIVE_UP_AFTER + 3):
        await rt.redis.hset(rt.keys.followups(), f"decision:x{n}", json.dumps({
            "topic": "decisions", "key": f"x{n}", "value": "{}", "at": 0, "sends": 1}))
    for send in (refuses, hangs):
        tried.clear()
        assert await outbox.Drainer(rt.redis, rt.keys, send, 0, send_timeout_s=0.05
                                    ).round() == 0
        assert len(tried) == outbox.GIVE_UP_AFTER
    tried.clear()
    assert await outbox.Drainer(rt.redis, rt.keys, every_third_goes, 0).round() == 2
    assert len(tried) == outbox.GIVE_UP_AFTER + 3  # each one tried


async def test_work_sent_by_its_maker_is_parked_like_the_drains(rt: Runtime) -> None:
    """The sixth send of a kept message parks it with one dead letter, whoever sent it,
    written by the script that counts the send (made there of the kept entry: its value
    cut to 10,000 bytes of whole characters); the seventh writes none."""
    value = json.dumps({"title": "Ngập sâu ở Giảng Võ " * 800}, ensure_ascii=False)
    await rt.redis.hset(rt.keys.followups(), "prompt:9", json.dumps({
        "topic": "approval-events", "key": "INC-9", "value": value, "at": time.time(),
        "sends": outbox.MAX_SENDS - 1}))
    for _ in range(2):
        await outbox.note_sent(rt.redis, rt.keys,
                               {"prompt:9": ("approval-events", "INC-9", value.encode())})
    [(_, fields)] = await rt.redis.xrange(rt.keys.dead_letters())
    letter = DeadLetter.model_validate_json(fields["letter"])
    assert (letter.topic, letter.key) == ("approval-events", "INC-9")
    assert letter.reason == ("no consumer finished prompt:9 after 6 sends; parked: kept, "
                             "and sent again as a worker starts and every 1 h")
    assert 9_997 <= len(letter.value.encode()) <= 10_000
    assert value.startswith(letter.value)


async def test_the_wait_before_a_resend_doubles_with_each_send(rt: Runtime) -> None:
    """Sent 100 s ago: sent twice before, it is due (60 s to wait); three times, not yet
    (120 s). `waiting` tells how long since each was first kept."""
    sent: list[str] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(key)

    worker = outbox.Drainer(rt.redis, rt.keys, broker_up)
    assert await worker.round() == 0  # its start: nothing kept, nothing owed
    now = time.time()
    for key, sends in (("twice", 2), ("thrice", 3)):
        await rt.redis.hset(rt.keys.followups(), f"decision:{key}", json.dumps({
            "topic": "decisions", "key": key, "value": "{}", "at": now - 100,
            "sends": sends, "first": now - 1000}))
    assert await worker.round() == 1
    assert sent == ["twice"]
    assert sorted((mid, round(age, -2), sends)
                  for mid, age, sends in await outbox.waiting(rt.redis, rt.keys)) == [
        ("decision:thrice", 1000, 3), ("decision:twice", 1000, 3)]


async def test_new_partitions_send_every_kept_message_again_at_once(rt: Runtime) -> None:
    """A broker that came back empty lost what it carried: a worker that starts, or is
    given new partitions, sends every kept message again at once, each once, whatever its
    wait (here a prompt sent three times, two minutes to wait, and one sent a moment ago),
    and so is one kept after the news but before the next round reads them. It used to
    wait out its interval, up to 10 minutes. Such resends of messages not due do not
    count towards parking them: every worker resends everything at every rebalance, and
    ten rebalances park nothing."""
    sent: list[str] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append(key)

    now = time.time()
    for key, sends in (("thrice", 3), ("just-sent", 1)):
        await rt.redis.hset(rt.keys.followups(), f"prompt:{key}", json.dumps({
            "topic": "approval-events", "key": key, "value": "{}", "at": now - 1,
            "sends": sends}))
    worker = outbox.Drainer(rt.redis, rt.keys, broker_up)  # a worker that starts
    assert await worker.round() == 2
    assert worker.all_sent
    assert await worker.round() == 0  # each once: then its wait again
    worker.send_all_again()  # the broker came back
    await outbox.keep(rt.redis, rt.keys, {"prompt:later": ("approval-events", "later", b"{}")})
    assert not worker.all_sent
    assert await worker.round() == 3
    assert await worker.round() == 0
    assert sorted(sent) == ["just-sent", "just-sent", "later", "thrice", "thrice"]
    for _ in range(10):
        worker.send_all_again()
        assert await worker.round() == 3
    assert [sends for _, _, sends in sorted(await outbox.waiting(rt.redis, rt.keys))] == [
        1, 0, 3]
    assert await rt.redis.xlen(rt.keys.dead_letters()) == 0


async def test_a_prompt_to_the_web_inbox_only_is_done_at_once(rt: Runtime) -> None:
    """A person who reads prompts on the web: the prompt is in their inbox and no longer
    kept, without any message on the broker."""
    pipeline = Pipeline(rt, {}, broker_down, lambda _timer: None)
    prompt = a_prompt("web")
    await pipeline._send_prompts([prompt])
    assert await pipeline.at_once.finish(5) == 0
    assert await rt.redis.hkeys(rt.keys.inbox("nguyen-van-an")) == [prompt.id]
    assert await rt.redis.hlen(rt.keys.followups()) == 0
    assert await pending_ids(rt) == set()


async def test_an_sms_prompt_is_kept_as_a_delivery_before_its_prompt_is_forgotten(
        rt: Runtime) -> None:
    """Handled at once, an SMS prompt's delivery is finished (here: skipped, this runtime
    has no SMS channel) and nothing is left kept; the same request twice at once in one
    process is handed over by the first only."""
    pipeline = Pipeline(rt, {}, broker_down, lambda _timer: None)
    prompt = a_prompt("sms")
    await pipeline._send_prompts([prompt])
    while pipeline.at_once.tasks:  # the prompt, then the delivery it starts
        await asyncio.wait(set(pipeline.at_once.tasks))
    record = await rt.redis.hgetall(rt.keys.delivery(f"prompt:{prompt.id}"))
    assert (record["status"], record["error"]) == ("skipped", "sms is not configured")
    assert await rt.redis.hlen(rt.keys.followups()) == 0
    assert await pending_ids(rt) == set()
    request = DeliveryRequest(id="code:twice", channel="sms", recipient="+84901000101",
                              text="Loa: 123456", purpose="confirmation")
    first, second = await asyncio.gather(deliver(rt, {}, request, NOW),
                                         deliver(rt, {}, request, NOW))
    assert (first.status, second.status) == ("skipped", "sending")
    assert second.detail == "being handed over by this process"


async def test_a_prompt_under_way_at_shutdown_leaves_its_delivery_kept(rt: Runtime) -> None:
    """Shutting down, a worker starts nothing more at once: a prompt that reaches its
    delivery then keeps it in Redis, for the recovery round after the restart."""
    pipeline = Pipeline(rt, {}, broker_down, lambda _timer: None)
    prompt = a_prompt("sms")
    await pipeline._send_prompts([prompt])
    assert await pipeline.at_once.finish(5) == 0
    assert await pending_ids(rt) == {f"prompt:{prompt.id}"}
    assert await rt.redis.hlen(rt.keys.followups()) == 0
