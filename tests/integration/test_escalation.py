"""Escalation deadlines on a real broker and Redis, with deadlines of a few seconds."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from aiokafka import AIOKafkaProducer

from coordinator.broker import bootstrap_servers
from coordinator.events import Decision
from tests.integration.drills import add_drill, drill_env
from tests.integration.factories import (
    entry_time,
    file_drill,
    timeline_entries,
)
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack, running, wait_for

pytestmark = pytest.mark.integration
MakeStack = Callable[..., Stack]
AREAS = ["hn-ba-dinh", "hn-hoan-kiem", "hn-dong-da", "hn-hai-ba-trung", "hn-tay-ho",
         "hn-cau-giay", "hn-thanh-xuan", "hn-hoang-mai", "hn-long-bien", "hn-nam-tu-liem"]


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory, mail: tuple[int, Inbox]
           ) -> Iterator[Stack]:
    """One running Loa with the drill playbooks (2 s per level), email to `mail`."""
    root = tmp_path_factory.mktemp("drills")
    env = drill_env(root)
    # Level 2 long enough for two CLI commands (each takes seconds to start) to decide in it.
    add_drill(env, "drill-stop", """\
    - {level: 1, within: 2s}
    - {level: 2, within: 10s}
    - {department: people-committee, level: 1, within: 2s}""")
    # Long enough for `loa scheduler` to adopt the request from Redis (every 2 s) first,
    # short enough that the frozen worker stays in its consumer group (6 s session).
    add_drill(env, "drill-punctual", """\
    - {level: 1, within: 4s}
    - {level: 2, within: 60s}""")
    with running(root / "stack", **env, LOA_SMTP_HOST="127.0.0.1",
                 LOA_SMTP_PORT=str(mail[0]), LOA_LINK_SECRET="test-link-secret") as stack:
        yield stack


def assert_walked_once(stack: Stack, incident_id: str) -> None:
    """Two escalations (1->2, 2->3), one exhaustion, each within 2 s of its deadline."""
    escalations = timeline_entries(stack, incident_id, "approval.escalated")
    assert [(e["detail"]["from_level"], e["detail"]["to_level"]) for e in escalations] == [
        (1, 2), (2, 3)]
    exhausted = timeline_entries(stack, incident_id, "approval.exhausted")
    assert len(exhausted) == 1
    requested = timeline_entries(stack, incident_id, "approval.requested")[0]
    deadlines = [datetime.fromisoformat(requested["detail"]["deadline"])] + [
        datetime.fromisoformat(e["detail"]["deadline"]) for e in escalations]
    for deadline, done in zip(deadlines, [*escalations, *exhausted], strict=True):
        late = (entry_time(done) - deadline).total_seconds()
        assert 0 <= late <= 2.0, f"{done['action']} {late:.3f}s after its deadline"
        assert done["detail"]["lateness_s"] == pytest.approx(late, abs=0.01)


def test_nobody_answers_the_chain_is_walked_then_held(drills: Stack) -> None:
    """Three levels, nobody answers: each escalates within 2 s of its deadline, then `hold`
    alerts the duty officers every 2 s until an approver decides; then the alerts stop."""
    incident_id, approval_id = file_drill(drills, "drill-hold", "hn-ba-dinh")
    wait_for(lambda: timeline_entries(drills, incident_id, "approval.exhausted"), 20, "exhaustion")
    assert_walked_once(drills, incident_id)
    exhausted = timeline_entries(drills, incident_id, "approval.exhausted")
    assert exhausted[0]["detail"]["rule"] == "hold"
    wait_for(lambda: len(timeline_entries(drills, incident_id, "approval.hold_alert")) >= 1, 10,
             "a hold alert")
    officers = drills.cli_json("inbox", *drills.as_person("tran-thi-mai"))
    assert any(p["approval_id"] == approval_id and p["kind"] == "hold_alert" for p in officers)

    # Anyone asked on the way may still decide; the first valid decision ends the hold.
    done = drills.cli("approve", approval_id, *drills.as_person("nguyen-van-an"))
    assert done.returncode == 0, done.stderr
    drills.wait_for_status(incident_id, "published")
    alerts = len(timeline_entries(drills, incident_id, "approval.hold_alert"))
    time.sleep(3)
    assert len(timeline_entries(drills, incident_id, "approval.hold_alert")) == alerts


def pickled_keys(url: str) -> list[str]:
    """Every key in the Redis at `url` holding a value (or hash field, member, stream field)
    that starts with the pickle protocol byte, as APScheduler's Redis job store wrote them."""
    readers: dict[bytes, Callable[[redis.Redis, bytes], list[Any]]] = {
        b"string": lambda r, k: [r.get(k)],
        b"hash": lambda r, k: [v for pair in r.hgetall(k).items() for v in pair],
        b"list": lambda r, k: r.lrange(k, 0, -1),
        b"set": lambda r, k: list(r.smembers(k)),
        b"zset": lambda r, k: r.zrange(k, 0, -1),
        b"stream": lambda r, k: [v for _, fields in r.xrange(k) for pair in fields.items()
                                 for v in pair],
    }
    raw = redis.Redis.from_url(url)  # bytes, as stored
    try:
        return sorted(key.decode() for key in raw.scan_iter(count=1000)
                      if any(isinstance(v, bytes) and v.startswith(b"\x80")
                             for v in readers.get(raw.type(key), lambda r, k: [])(raw, key)))
    finally:
        raw.close()


def test_the_scheduler_escalates_on_time_while_the_worker_is_frozen(drills: Stack) -> None:
    """`loa scheduler` holds the timers too: with the only worker stopped (SIGSTOP: its loop
    busy for good), the deadline is escalated within a second of its time; once the worker
    runs again, its own timer finds the request moved on, and the level escalates once."""
    drills.start_scheduler()
    worker = drills.workers["w1"]
    try:
        incident_id, _ = file_drill(drills, "drill-punctual", "hn-tay-ho")
        worker.send_signal(signal.SIGSTOP)
        try:
            escalated = wait_for(lambda: timeline_entries(
                drills, incident_id, "approval.escalated"), 15, "the scheduler's escalation")
        finally:
            worker.send_signal(signal.SIGCONT)
        requested = timeline_entries(drills, incident_id, "approval.requested")[0]
        deadline = datetime.fromisoformat(requested["detail"]["deadline"])
        late = (entry_time(escalated[0]) - deadline).total_seconds()
        assert 0 <= late <= 1.0, f"escalated {late:.3f} s after its deadline"
        # the worker, thawed, would escalate now if it did not see the request moved on
        wait_for(lambda: drills.redis.exists(drills.keys.worker_heartbeat("w1")) and
                 drills.redis.ttl(drills.keys.worker_heartbeat("w1")) > 7, 20,
                 "the worker's next heartbeat")
        time.sleep(2)
        assert len(timeline_entries(drills, incident_id, "approval.escalated")) == 1
    finally:
        drills.stop_scheduler()


def test_nothing_in_redis_is_a_pickle(drills: Stack) -> None:
    """A request escalated twice and held (its next hold alert pending): no value anywhere in
    Redis is a pickle, and the old job store's keys do not exist."""
    incident_id, _ = file_drill(drills, "drill-hold", "hn-long-bien")
    wait_for(lambda: timeline_entries(drills, incident_id, "approval.hold_alert"), 20,
             "a hold alert")
    assert len(timeline_entries(drills, incident_id, "approval.escalated")) == 2
    assert pickled_keys(drills.redis_service.url) == []
    assert not drills.redis.exists(*drills.keys.legacy_timer_store())


def test_a_decision_at_level_2_stops_the_clock(drills: Stack) -> None:
    """Approved at level 2: no later escalation; a late level-1 decision is refused politely
    and audited."""
    approver = drills.as_person("pham-duc-thang")  # its token made before the clock runs
    incident_id, approval_id = file_drill(drills, "drill-stop", "hn-hoan-kiem")
    moved = wait_for(lambda: timeline_entries(drills, incident_id, "approval.escalated"), 10,
                     "level 2")
    holder = drills.cli_json("approvals", *drills.as_officer())
    mine = next(a for a in holder if a["id"] == approval_id)
    assert mine["level"] == 2 and mine["approvers"] == ["pham-duc-thang"]
    done = drills.cli("approve", approval_id, *approver)
    assert done.returncode == 0, done.stderr
    level_2_deadline = datetime.fromisoformat(moved[0]["detail"]["deadline"])
    # past the level-2 deadline, and the 2 s an escalation may take
    time.sleep(max(0.0, (level_2_deadline - datetime.now(UTC)).total_seconds()) + 3)
    assert len(timeline_entries(drills, incident_id, "approval.escalated")) == 1
    assert not timeline_entries(drills, incident_id, "approval.exhausted")
    late = drills.cli("approve", approval_id, *drills.as_person("nguyen-van-an"))
    assert late.returncode == 2
    assert "refused: already approved by pham-duc-thang at" in late.stderr.replace("\n", " ")
    refused = timeline_entries(drills, incident_id, "decision.refused")
    assert len(refused) == 1 and refused[0]["actor"] == "nguyen-van-an"


def test_duty_officer_signs_off_after_exhaustion(drills: Stack) -> None:
    """`duty_officer`: once the chain is used up, a duty officer may approve, and the
    statement records that basis."""
    duty_officer = drills.as_person("do-quang-huy")  # its token made before the clock runs
    incident_id, approval_id = file_drill(drills, "drill-duty", "hn-dong-da")
    refused_early = drills.cli("approve", approval_id, *duty_officer)
    assert refused_early.returncode == 2, refused_early.stdout
    assert not timeline_entries(drills, incident_id, "approval.exhausted")
    wait_for(lambda: timeline_entries(drills, incident_id, "approval.exhausted"), 30, "exhaustion")
    done = drills.cli("approve", approval_id, *duty_officer)
    assert done.returncode == 0, done.stderr
    drills.wait_for_status(incident_id, "published")
    with drills.http() as http:
        statement = http.get(f"/api/statements/STM-{incident_id[4:]}-1").json()
    assert statement["approval_basis"] == "duty_officer"
    assert statement["approved_by"] == ["do-quang-huy"]


def test_publish_on_exhaustion_is_recorded_as_such(drills: Stack) -> None:
    """`publish` at extreme severity, for a report of a reporter the playbook names
    (`publish_for: [department:construction]`): published with the exhaustion as its
    approval."""
    reporter = drills.token("construction-desk", "reporter", department="construction")
    incident_id, _ = file_drill(drills, "drill-publish", "hn-hai-ba-trung", severity="extreme",
                                token=reporter)
    drills.wait_for_status(incident_id, "published", timeout_s=20)
    assert_walked_once(drills, incident_id)
    with drills.http() as http:
        statement = http.get(f"/api/statements/STM-{incident_id[4:]}-1").json()
    assert statement["approval_basis"] == "exhausted_publish" and statement["approved_by"] == []


def test_decision_and_deadline_racing_have_one_outcome(drills: Stack) -> None:
    """Ten requests, each approved by its level-1 approver within ±0.3 s of its deadline:
    each is approved once and published once, and no escalation follows the approval."""
    requests = [file_drill(drills, "drill-hold", area) for area in AREAS]
    rng = random.Random(7)

    async def race() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(drills.broker.url))
        await producer.start()
        try:
            async def decide(approval_id: str) -> None:
                deadline = datetime.fromisoformat(_deadline(drills, approval_id))
                when = deadline + timedelta(seconds=rng.uniform(-0.3, 0.3))
                await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))
                decision = Decision(id=f"dec-{uuid.uuid4().hex[:12]}", approval_id=approval_id,
                                    approver_id="nguyen-van-an", verdict="approve")
                await producer.send_and_wait("decisions", decision.to_bytes(),
                                             key=approval_id.encode())

            await asyncio.gather(*(decide(a) for _, a in requests))
        finally:
            await producer.stop()

    asyncio.run(race())
    for incident_id, _ in requests:
        drills.wait_for_status(incident_id, "published", timeout_s=20)
    time.sleep(3)
    for incident_id, _ in requests:
        actions = drills.timeline_actions(incident_id)
        assert actions.count("approval.approved") == 1
        assert actions.count("statement.published") == 1
        after = actions[actions.index("approval.approved"):]
        assert "approval.escalated" not in after and "approval.exhausted" not in after


def _deadline(stack: Stack, approval_id: str) -> str:
    raw = stack.redis.hget(stack.keys.approval(approval_id), "due")
    assert raw
    return raw


def test_a_killed_worker_escalates_right_after_restart_exactly_once(
        make_stack: MakeStack, tmp_path: Any) -> None:
    """SIGKILL while a deadline is pending, back after the deadline: the escalation happens
    right after the restart, once, and its lateness is recorded."""
    stack = make_stack(**drill_env(tmp_path, within_s=3))
    stack.start_worker_and_web()
    incident_id, _ = file_drill(stack, "drill-hold")
    stack.stop_worker(sig=signal.SIGKILL)
    time.sleep(5)  # the level-1 deadline passes while no worker runs
    stack.start_worker()
    back = datetime.now(UTC)
    first = wait_for(lambda: timeline_entries(stack, incident_id, "approval.escalated"), 10,
                     "escalation")
    assert (entry_time(first[0]) - back).total_seconds() < 2.0
    assert first[0]["detail"]["lateness_s"] > 1.5
    time.sleep(1)
    from_level_1 = [e for e in timeline_entries(stack, incident_id, "approval.escalated")
                    if e["detail"]["from_level"] == 1]
    assert len(from_level_1) == 1


def test_two_workers_escalate_each_level_once(make_stack: MakeStack, tmp_path: Any) -> None:
    """Two workers, each holding every pending request's timers: one escalation per level."""
    stack = make_stack(**drill_env(tmp_path))
    stack.start_workers("w1", "w2")
    stack.start_web()
    walks = [file_drill(stack, "drill-hold", area)[0] for area in AREAS[:4]]
    for incident_id in walks:
        wait_for(lambda i=incident_id: timeline_entries(stack, i, "approval.exhausted"), 20,
                 "exhaustion")
    time.sleep(1)
    for incident_id in walks:
        assert_walked_once(stack, incident_id)


def test_absent_approvers_are_routed_to_their_delegate_or_skipped(
        make_stack: MakeStack, tmp_path: Any) -> None:
    """nguyen-van-an is away with a delegate: the delegate holds level 1; le-thi-thu-ha is
    away without one: a level of only her is skipped at once. Both are said in the timeline."""
    stack = make_stack(**drill_env(tmp_path, absences=True))
    stack.start_worker_and_web()
    incident_id, _approval_id = file_drill(stack, "drill-absent")
    wait_for(lambda: stack.cli_json("inbox", *stack.as_person("pham-duc-thang")), 10,
             "delegate prompt")
    request = timeline_entries(stack, incident_id, "approval.requested")[0]["detail"]
    assert request["level"] == 1 and request["holders"] == ["pham-duc-thang"]
    assert any("nguyen-van-an is away until" in n and "delegated to pham-duc-thang" in n
               for n in request["notes"])
    assert any("le-thi-thu-ha is away until" in n for n in request["notes"])

    skipped_incident, _ = file_drill(stack, "drill-skip", "hn-tay-ho")
    skipped = timeline_entries(stack, skipped_incident, "approval.requested")[0]["detail"]
    assert skipped["level"] == 2 and skipped["holders"] == ["pham-duc-thang"]
    assert "level 1 skipped: nobody available" in skipped["notes"]


def test_an_escalation_emails_the_next_level_with_a_link_that_works_once(
        drills: Stack, mail: tuple[int, Inbox]) -> None:
    """Level 2 prefers email: it gets the full draft and a signed link; GET only asks,
    POST decides, a second POST is refused, and a tampered link is rejected."""
    _, inbox = mail
    incident_id, approval_id = file_drill(drills, "drill-email", "hn-hoang-mai",
                                          title="Diễn tập <script>alert(1)</script>")
    email = wait_for(lambda: next((m for m in inbox.messages
                                   if approval_id in str(m["Subject"])), None), 15, "email")
    assert email["To"] == "thang.pd@xaydung.hanoi.example"
    body = email.get_body(preferencelist=("plain",)).get_content()
    link = next(word for word in body.split() if "/decide/" in word)
    html = email.get_body(preferencelist=("html",)).get_content()
    assert "Diễn tập" in html and link.replace("&", "&amp;") in html
    # what the reporter typed is text in the HTML part, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert f"/inbox/{approval_id}" in html and f"/inbox/{approval_id}" in body

    with httpx.Client() as http:
        page = http.get(link)
        assert page.status_code == 200 and 'name="verdict" value="approve"' in page.text
        draft = json.loads(drills.redis.get(drills.keys.draft(
            drills.incident(incident_id)["draft_id"])) or "{}")
        for text in draft["texts"]:  # every text an approval publishes, not the web's only
            assert f"<small>({text['channel']} · {text['language']})</small>" in page.text
        assert drills.incident(incident_id)["status"] == "awaiting_approval"  # GET decides nothing
        tampered = http.get(link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb"))
        assert tampered.status_code == 400 and "not valid" in tampered.text
        done = http.post(link, data={"verdict": "approve"})
        assert done.status_code == 200 and "approved; statement" in done.text
        again = http.post(link, data={"verdict": "reject", "reason": "đổi ý"})
        assert again.status_code == 409
        # A link that expired is refused, even though it is otherwise genuine.
        from coordinator.approvals.links import LinkClaims, sign_link

        stale = sign_link("test-link-secret", LinkClaims(
            approval_id, "pham-duc-thang", "stale", datetime.now(UTC) - timedelta(seconds=1)))
        expired = http.get(f"{drills.web_url}/decide/{stale}")
        assert expired.status_code == 400 and "expired" in expired.text
    drills.wait_for_status(incident_id, "published")
    approved = timeline_entries(drills, incident_id, "approval.approved")
    assert len(approved) == 1 and approved[0]["interface"] == "email"
    assert approved[0]["actor"] == "pham-duc-thang"
