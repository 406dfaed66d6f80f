"""The reach an approver sees before approving: counted per channel and per language inside
Redis, in one script that leaves none of its working bitmaps behind, and kept on the
approval request once (a private redis-server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from channels.segments import segment_count
from coordinator.approvals.prompt_messages import prompt_delivery
from coordinator.approvals.prompts import prompts_for
from coordinator.dispatch.reach import Reach, ReachInputs, reach_of, record_with_reach
from coordinator.events import RenderedText, Report, Severity
from coordinator.incidents.intake import take_in_report
from coordinator.model.approval import ApprovalRecord
from coordinator.plan.planner import plan_incident
from coordinator.runtime import Runtime
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.registry import register
from coordinator.subscribers.store import number_of

pytestmark = pytest.mark.integration
VI = "Ngập sâu phố Kim Mã, tránh khu vực."  # UCS-2: one segment of 70
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
EN = "Deep flooding on Kim Ma street: avoid the area. " * 4  # GSM-7, 196 chars: 2 segments


PEOPLE = [  # (phone, email, language, channels, area)
    ("+84901000001", None, "vi", ["sms"], "hn-ba-dinh"),
    ("+84901000002", "b@example.org", "en", ["sms", "email"], "hn-ba-dinh"),
    ("+84901000003", None, "en", ["sms"], "hn-ba-dinh-kim-ma"),  # a ward of Ba Đình
    (None, "d@example.org", "vi", ["email"], "hn-ba-dinh"),
    ("+84901000005", None, "vi", ["sms"], "hn-cau-giay"),  # elsewhere: not reached
]
TEXTS = [RenderedText(channel="sms", language="vi", body=VI),
         RenderedText(channel="sms", language="en", body=EN)]


async def register_people(rt: Runtime) -> list[Subscriber]:
    saved = []
    for phone, email, language, channels, area in PEOPLE:
        subscriber, _ = await register(rt.redis, rt.keys, Subscriber(
            phone=phone, email=email, language=language, areas=[area],
            channels=channels))  # type: ignore[arg-type]
        saved.append(subscriber)
    return saved


async def test_reach_counts_each_channel_and_language_and_cleans_up(rt: Runtime) -> None:
    await register_people(rt)
    reach = await reach_of(rt.redis, rt.keys, rt.city,
                           ReachInputs("INC-00001", "hn-ba-dinh", "flood", TEXTS))
    assert (segment_count(VI), segment_count(EN)) == (1, 2)
    assert reach == Reach(sms=3, email=2, sms_segments=1 * 1 + 2 * 2)
    assert [k async for k in rt.redis.scan_iter(match=rt.keys.subs_bits("tmp", "*"))] == []


async def test_a_requests_reach_is_kept_on_it_once_from_what_was_drafted_or_read_back(
        rt: Runtime) -> None:
    """The planner's own inputs and those read back from the draft and the incident count
    the same; the first count stays (a replay does not count again); a request that is gone
    is not made again; an SMS reader whose language is no longer declared costs the city's
    own language's segments; a drill counts its test list, an update those reached before."""
    people = await register_people(rt)
    k = rt.keys
    await rt.redis.hset(k.approval("APR-00001-1"), mapping={"status": "pending"})
    inputs = ReachInputs("INC-00001", "hn-ba-dinh", "flood", TEXTS)
    record = await record_with_reach(rt.redis, k, rt.city, "APR-00001-1", "INC-00001",
                                     "DRF-00001-1", inputs)
    assert record == {"status": "pending",
                      "reach": '{"sms": 3, "email": 2, "sms_segments": 5}'}
    assert Reach.from_json(record["reach"]) == Reach(3, 2, 1 * 1 + 2 * 2)
    # the same request again, now with another area: the first count stays
    again = await record_with_reach(rt.redis, k, rt.city, "APR-00001-1", "INC-00001",
                                    "DRF-00001-1", ReachInputs("INC-00001", "hn-cau-giay",
                                                               "flood", TEXTS))
    assert again == record
    # read back from the draft and the incident (their update flag: `references`)
    await rt.redis.set(k.draft("DRF-00002-1"), json.dumps({
        "texts": [t.model_dump() for t in TEXTS], "references": []}))
    await rt.redis.hset(k.incident("INC-00002"), mapping={
        "area": "hn-ba-dinh", "kind": "flood", "exercise": "0", "drill_list": ""})
    await rt.redis.hset(k.approval("APR-00002-1"), mapping={"status": "pending"})
    read_back = await record_with_reach(rt.redis, k, rt.city, "APR-00002-1", "INC-00002",
                                        "DRF-00002-1")
    assert read_back["reach"] == record["reach"]
    # the English reader in Kim Mã whose language is no longer declared: the Vietnamese
    # text's one segment, not the English two
    number = await number_of(rt.redis, k, people[2].id)
    assert number is not None
    await rt.redis.setbit(k.subs_bits("lang", "en"), number, 0)
    assert await reach_of(rt.redis, k, rt.city, inputs) == Reach(3, 2, 1 + 2 + 1)
    # a drill with a test list reaches the list's active members only
    first = await number_of(rt.redis, k, people[0].id)
    await rt.redis.setbit(k.subs_bits("list", "desk"), first, 1)
    drill = ReachInputs("INC-00001", "hn-ba-dinh", "flood", TEXTS, exercise=True,
                        drill_list="desk")
    assert await reach_of(rt.redis, k, rt.city, drill) == Reach(1, 0, 1)
    # an update also reaches who the incident reached before (Cầu Giấy's Vietnamese reader)
    elsewhere = await number_of(rt.redis, k, people[4].id)
    await rt.redis.setbit(k.incident_reached("INC-00001"), elsewhere, 1)
    update = ReachInputs("INC-00001", "hn-ba-dinh", "flood", TEXTS, updates_earlier=True)
    assert await reach_of(rt.redis, k, rt.city, update) == Reach(4, 2, 1 + 2 + 1 + 1)
    # gone: nothing counted, nothing made
    assert await record_with_reach(rt.redis, k, rt.city, "APR-00009-1", "INC-00001",
                                   "DRF-00001-1", inputs) == {}
    assert not await rt.redis.exists(k.approval("APR-00009-1"))
    assert [key async for key in rt.redis.scan_iter(match=k.subs_bits("tmp", "*"))] == []


async def test_the_planners_own_draft_and_reach_match_what_is_read_back(rt: Runtime) -> None:
    """The planner hands its drill's reach inputs and its draft to the request's first
    prompts instead of reading them back: the reach it keeps is the one read back from the
    draft and the incident, and each prompt's SMS or email is the one the read draft makes."""
    people = await register_people(rt)
    k = rt.keys
    first = await number_of(rt.redis, k, people[0].id)
    await rt.redis.setbit(k.subs_bits("list", "desk"), first, 1)
    report = Report(id="token:t:1", kind="flood", severity=Severity.severe, area="hn-ba-dinh",
                    title="Ngập sâu", received_at=NOW, exercise=True, drill_list="desk")
    taken = await take_in_report(rt.redis, k, report, 600.0)
    plan = await plan_incident(rt, taken.incident_id, NOW)
    assert plan.request is not None and plan.reach is not None and plan.draft is not None
    assert plan.reach.exercise and plan.reach.drill_list == "desk"
    # counted and kept in the plan's own transaction: what is stored, and kept once
    record = plan.record
    assert record is not None and record == await rt.redis.hgetall(k.approval(plan.request.id))
    assert await record_with_reach(rt.redis, k, rt.city, plan.request.id, plan.incident_id,
                                   plan.request.draft_id, plan.reach) == record
    # the same request's reach counted from what is stored, on a copy of it
    await rt.redis.hset(k.approval("APR-COPY-1"), mapping={"status": "pending"})
    read_back = await record_with_reach(rt.redis, k, rt.city, "APR-COPY-1", plan.incident_id,
                                        plan.request.draft_id)
    assert record["reach"] == read_back["reach"]
    # the list's one SMS reader, a Vietnamese one: the drill's Vietnamese SMS's segments
    [vi_sms] = [t for t in plan.draft.texts if (t.channel, t.language) == ("sms", "vi")]
    assert Reach.from_json(record["reach"]) == Reach(1, 0, vi_sms.segments or 0)
    prompts = prompts_for("request", ApprovalRecord.from_hash(record),
                          ApprovalRecord.from_hash(record).holders, rt.city.people, NOW,
                          rt.settings.timezone)
    compared = [p.channel for p in prompts if p.channel in ("sms", "email")]
    assert compared  # the demo's approvers include one on SMS or email
    for p in prompts:
        given, read = await prompt_delivery(rt, p, plan.draft), await prompt_delivery(rt, p)
        assert (given is None) == (read is None)
        if given is not None and read is not None:  # (each made now: `at` differs)
            assert given.model_dump(exclude={"at"}) == read.model_dump(exclude={"at"})


async def test_a_redis_that_lost_the_script_still_gets_the_plan_then_its_reach(
        rt: Runtime) -> None:
    """Redis restarted since the worker loaded the reach script: the plan's transaction
    writes all the rest, the planner says its reach is not counted yet (no record), and
    counting it apart keeps it, as the worker's pipeline does; later plans load it again."""
    await register_people(rt)
    k = rt.keys
    report = Report(id="token:t:2", kind="flood", severity=Severity.severe, area="hn-ba-dinh",
                    title="Ngập sâu", received_at=NOW)
    first = await plan_incident(rt, (await take_in_report(rt.redis, k, report, 600.0)
                                     ).incident_id, NOW)
    assert first.record is not None  # the script is loaded now, as far as this process knows
    await rt.redis.script_flush()
    report = report.model_copy(update={"id": "token:t:3", "area": "hn-cau-giay"})
    plan = await plan_incident(rt, (await take_in_report(rt.redis, k, report, 600.0)
                                    ).incident_id, NOW)
    assert plan.request is not None and plan.reach is not None and plan.first_time
    assert plan.record is None
    stored = await rt.redis.hgetall(k.approval(plan.request.id))
    assert stored["status"] == "pending" and "reach" not in stored
    assert (await rt.redis.hget(k.incident(plan.incident_id), "approval_id")) == plan.request.id
    record = await record_with_reach(rt.redis, k, rt.city, plan.request.id, plan.incident_id,
                                     plan.request.draft_id, plan.reach)
    assert plan.draft is not None
    [vi_sms] = [t for t in plan.draft.texts if (t.channel, t.language) == ("sms", "vi")]
    # the one Cầu Giấy reader, a Vietnamese one on SMS
    assert Reach.from_json(record["reach"]) == Reach(1, 0, vi_sms.segments or 0)
    report = report.model_copy(update={"id": "token:t:4", "area": "hn-dong-da"})
    again = await plan_incident(rt, (await take_in_report(rt.redis, k, report, 600.0)
                                     ).incident_id, NOW)
    assert again.record is not None and Reach.from_json(again.record["reach"]) == Reach(0, 0, 0)
