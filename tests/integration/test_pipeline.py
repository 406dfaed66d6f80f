"""The whole path over a real broker and Redis: report -> incident -> approval -> statement."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coordinator.broker import bootstrap_servers
from tests.integration.factories import (
    post_report,
    report_body,
    wait_for_approval,
    wait_for_incident,
)
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_a_report_becomes_a_published_statement(stack: Stack) -> None:
    """HTTP report -> incident -> approval request -> `loa approve` -> statement on /, API."""
    report_id = post_report(stack, report_body("hn-ba-dinh-kim-ma"))
    incident_id, approval = wait_for_approval(stack, report_id)
    assert approval["status"] == "pending" and approval["level"] == 1
    approver = approval["approvers"][0]
    prompts = wait_for(lambda: [p for p in stack.cli_json("inbox", *stack.as_person(approver))
                                if p["approval_id"] == approval["id"]], 10, "the prompt")
    assert prompts[0]["kind"] == "request"
    assert (datetime.fromisoformat(prompts[0]["deadline"])
            == datetime.fromisoformat(approval["deadline"]))
    # the inbox shows no reply code: only the approver's own SMS carries theirs
    assert prompts[0]["text"].startswith(f"[Loa] Cần phê duyệt {approval['id']}")
    assert "reply_code" not in prompts[0] and "YES" not in prompts[0]["text"]

    done = stack.cli("approve", approval["id"], *stack.as_person(approver), "--comment", "đồng ý")
    assert done.returncode == 0, done.stderr
    assert f"approved; statement STM-{incident_id[4:]}-1 goes out" in done.stdout
    stack.wait_for_status(incident_id, "published")

    statement_id = f"STM-{incident_id[4:]}-1"
    with stack.http() as http:
        listed = http.get("/api/statements").json()["items"]
        page = http.get("/").text
        own_page = http.get(f"/statements/{statement_id}")
    mine = [s for s in listed if s["id"] == statement_id]
    assert len(mine) == 1 and mine[0]["approved_by"] == [approver]
    assert {(t["channel"], t["language"]) for t in mine[0]["texts"]} >= {("web", "vi"),
                                                                         ("web", "en")}
    assert statement_id in page
    assert own_page.status_code == 200 and "Phường Kim Mã" in own_page.text
    assert stack.timeline_actions(incident_id) == [
        "incident.opened", "playbook.selected", "draft.rendered", "approval.requested",
        "approval.approved", "statement.published"]


def test_a_rejected_draft_is_never_published(stack: Stack) -> None:
    """`loa reject` sends the incident back to the duty officer with the reason; nothing public."""
    report_id = post_report(stack, report_body("hn-ba-dinh-dien-bien"))
    incident_id, approval = wait_for_approval(stack, report_id)
    done = stack.cli("reject", approval["id"], *stack.as_person(approval["approvers"][0]),
                     "--reason", "Số liệu chưa khớp")
    assert done.returncode == 0, done.stderr
    stack.wait_for_status(incident_id, "returned")
    assert stack.incident(incident_id)["status_reason"].endswith("Số liệu chưa khớp")
    with stack.http() as http:
        listed = http.get("/api/statements").json()["items"]
        assert http.get(f"/statements/STM-{incident_id[4:]}-1").status_code == 404
    assert all(s["incident_id"] != incident_id for s in listed)
    assert "statement.published" not in stack.timeline_actions(incident_id)


def test_a_decision_from_the_wrong_person_is_refused_and_audited(stack: Stack) -> None:
    """Someone not at the request's level cannot approve; the attempt is in the timeline."""
    report_id = post_report(stack, report_body("hn-hoan-kiem-trang-tien", kind="fire"))
    incident_id, approval = wait_for_approval(stack, report_id)
    done = stack.cli("approve", approval["id"], *stack.as_person("tran-thi-mai"))
    assert done.returncode == 2
    assert (f"refused: tran-thi-mai may not decide {approval['id']}: it is at level 1"
            in done.stderr.replace("\n", " "))
    assert stack.timeline_actions(incident_id)[-1] == "decision.refused"
    assert stack.incident(incident_id)["status"] == "awaiting_approval"


def test_the_same_report_twice_is_taken_in_once(stack: Stack) -> None:
    """One report id posted twice: one incident, one draft, one approval request."""
    body = report_body("hn-dong-da-van-mieu", id=f"rep-dup-{uuid.uuid4().hex[:8]}")
    first, second = post_report(stack, body), post_report(stack, body)
    assert first == second == f"t.duty-officer:{body['id']}"
    incident_id, approval = wait_for_approval(stack, first)
    wait_for(lambda: stack.redis.hlen(stack.keys.outbox()) == 0 or None, 10, "outbox drained")
    assert stack.incident(incident_id)["report_count"] == "1"
    actions = stack.timeline_actions(incident_id)
    assert actions.count("incident.opened") == 1
    assert actions.count("draft.rendered") == 1
    assert actions.count("approval.requested") == 1
    assert approval["id"] == f"APR-{incident_id[4:]}-1"


def test_report_ids_are_per_client(stack: Stack) -> None:
    """Two clients sending the same id file two reports: neither takes the other's."""
    body = report_body("hn-dong-da-van-mieu", id=f"rep-same-{uuid.uuid4().hex[:8]}")
    other = stack.token("ward-desk", "reporter", area="hn-dong-da")
    mine, theirs = post_report(stack, body), post_report(stack, body, token=other)
    assert (mine, theirs) == (f"t.duty-officer:{body['id']}", f"t.ward-desk:{body['id']}")
    wait_for(lambda: stack.incident_of(mine) and stack.incident_of(theirs), 30, "both taken in")
    report = json.loads(stack.redis.hget(stack.keys.report(theirs), "report") or "{}")
    assert report["source"] == {"actor": "token:ward-desk", "role": "reporter",
                                "scope": "area:hn-dong-da", "verified": True}


def test_an_id_used_again_for_another_report_is_refused_and_a_new_token_has_its_own(
        stack: Stack) -> None:
    """A resend must be the same report: an id its client used for another one is a 409
    naming it, not a report silently dropped as a replay. A token of a name given again
    (after a revoke) has ids of its own: its `rep-1` is not the revoked token's."""
    name = f"desk-{uuid.uuid4().hex[:6]}"
    first = stack.cli("tokens", "add", name, "--role", "reporter")
    body = report_body("hn-dong-da-van-mieu", id=f"rep-own-{uuid.uuid4().hex[:8]}")
    taken = post_report(stack, body, first.stdout.split()[-1])
    assert taken == f"t.{name}:{body['id']}"
    with stack.http(first.stdout.split()[-1]) as http:
        other = http.post("/api/reports", json={**body, "title": "Another report"})
    assert (other.status_code, other.json()["detail"]) == (409, (
        f"id: {taken} was already used for a different report; give this one its own id "
        "(a resend must be the same report)"))

    assert stack.cli("tokens", "revoke", name).returncode == 0
    again = stack.cli("tokens", "add", name, "--role", "reporter")
    assert again.returncode == 0, again.stderr
    theirs = post_report(stack, {**body, "title": "Another report"}, again.stdout.split()[-1])
    assert theirs == f"t.{name}:2:{body['id']}"
    assert wait_for_incident(stack, theirs) and stack.incident_of(taken)
    report = json.loads(stack.redis.hget(stack.keys.report(theirs), "report") or "{}")
    assert report["title"] == "Another report"


def test_related_reports_join_one_incident(stack: Stack) -> None:
    """Same kind, same area, within the window: one incident; another area: another incident."""
    a = post_report(stack, report_body("hn-tay-ho-quang-an"))
    first_incident = wait_for_incident(stack, a)
    b = post_report(stack, report_body("hn-tay-ho-quang-an", severity="extreme"))
    c = post_report(stack, report_body("hn-long-bien-bo-de"))
    assert wait_for_incident(stack, b) == first_incident
    other = wait_for_incident(stack, c)
    assert other != first_incident
    joined = stack.incident(first_incident)
    assert joined["report_count"] == "2"
    assert joined["severity"] == "extreme"  # the incident takes the highest severity reported
    assert stack.timeline_actions(first_incident).count("incident.report_attached") == 1


def test_an_unmatched_report_goes_to_the_duty_officer(stack: Stack) -> None:
    """No playbook matches: the fallback puts the incident in front of the duty officer."""
    report_id = post_report(stack, report_body("hn-cau-giay", kind="sinkhole"))
    incident_id = wait_for_incident(stack, report_id)
    stack.wait_for_status(incident_id, "needs_duty_officer")
    incident = stack.incident(incident_id)
    assert incident["playbook"] == "fallback"
    assert incident["status_reason"] == "no playbook matched: the duty officer decides"
    assert incident["approval_id"] == ""


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "flood", "severity": "apocalyptic", "area": "hn-ba-dinh", "title": "Ngập"},
     "severity"),
    ({"kind": "flood", "severity": "severe", "area": "hn-atlantis", "title": "Ngập sâu"}, "area"),
    ({"kind": "flood", "severity": "severe", "area": "hn-ba-dinh"}, "title"),
    ({"kind": "Flood Now!", "severity": "severe", "area": "hn-ba-dinh", "title": "Ngập sâu"},
     "kind"),
    ({"kind": "volcano", "severity": "severe", "area": "hn-ba-dinh", "title": "Núi lửa"},
     "kind"),
])
def test_a_malformed_report_is_refused_naming_the_field(stack: Stack, body: dict[str, Any],
                                                        field: str) -> None:
    """422 with the bad field named; nothing is recorded."""
    before = stack.redis.hlen(stack.keys.outbox())
    with stack.http() as http:
        answer = http.post("/api/reports", json=body)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert answer.json()["detail"].startswith(f"invalid request: {field}: ")
    assert stack.redis.hlen(stack.keys.outbox()) <= before


@pytest.mark.parametrize(("content", "content_type", "says"), [
    (b'{"kind": "flood", "severity": "severe"', "application/json", "Invalid JSON"),
    (b"kind=flood&severity=severe&area=hn-ba-dinh&title=Ngap",
     "application/x-www-form-urlencoded", "send the report as JSON"),
    (b"", "application/json", "Invalid JSON"),
    (b'{"kind": "flood", "severity": "severe", "area": "hn-ba-dinh", "title": "Ngap"}', "",
     "a body with no Content-Type"),
    (b'["flood", "severe"]', "application/json", "should be an object"),
])
def test_a_body_that_is_no_json_report_is_refused_naming_the_body(
        stack: Stack, content: bytes, content_type: str, says: str) -> None:
    """422 naming the body itself: JSON cut short, a form, nothing; nothing is recorded."""
    before = stack.redis.hlen(stack.keys.outbox())
    with stack.http() as http:
        answer = http.post("/api/reports", content=content,
                           headers={"Content-Type": content_type} if content_type else {})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["body"]
    assert says in answer.json()["errors"][0]["message"]
    assert stack.redis.hlen(stack.keys.outbox()) <= before


def test_a_report_in_utf_16_or_after_a_byte_order_mark_is_json_all_the_same(
        stack: Stack) -> None:
    """As Starlette reads JSON: a UTF-8 byte-order mark (some Windows clients send one),
    or UTF-16, is taken in; the lock comes before the body (no credential: 401)."""
    body = report_body("hn-thanh-xuan")
    with stack.http() as http:
        marked = http.post("/api/reports", content=b"\xef\xbb\xbf" + json.dumps(
            body).encode(), headers={"Content-Type": "application/json"})
        wide = http.post("/api/reports", content=json.dumps(body).encode("utf-16"),
                         headers={"Content-Type": "application/json; charset=utf-16"})
    with stack.anonymous() as http:
        nobody = http.post("/api/reports", content=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert (marked.status_code, wide.status_code, nobody.status_code) == (202, 202, 401)
    assert marked.json()["id"] != wide.json()["id"]  # two reports, each its own id


def test_garbage_on_reports_goes_to_dead_letters_and_the_worker_goes_on(stack: Stack) -> None:
    """Unparseable and invalid messages land in dead-letters with a reason; a good report
    sent after them still becomes an incident."""
    marker = uuid.uuid4().hex
    invalid = json.dumps({"type": "report", "id": f"rep-{marker}", "kind": "flood"}).encode()
    garbage = f"not json {marker}".encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(stack.broker.url))
        await producer.start()
        try:
            await producer.send_and_wait("reports", garbage, key=b"flood:hn")
            await producer.send_and_wait("reports", invalid, key=b"flood:hn")
        finally:
            await producer.stop()

    asyncio.run(produce())
    report_id = post_report(stack, report_body("hn-thanh-xuan"))
    wait_for_incident(stack, report_id)

    async def dead_letters() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer("dead-letters", bootstrap_servers=bootstrap_servers(
            stack.broker.url), auto_offset_reset="earliest", group_id=f"t-{marker}")
        await consumer.start()
        try:
            found: list[dict[str, Any]] = []
            for _ in range(50):
                batch = await consumer.getmany(timeout_ms=200)
                found += [json.loads(m.value) for msgs in batch.values() for m in msgs]
                if sum(marker in d["value"] for d in found) >= 2:
                    break
            return [d for d in found if marker in d["value"]]
        finally:
            await consumer.stop()

    letters = asyncio.run(dead_letters())
    reasons = {d["value"][:8]: d["reason"] for d in letters}
    assert len(letters) == 2 and all(d["topic"] == "reports" for d in letters)
    assert reasons["not json"].startswith("BadEvent: (value): Invalid JSON")
    invalid_reason = next(d["reason"] for d in letters if d["value"].startswith("{"))
    assert "severity: Field required" in invalid_reason and "area: Field required" in invalid_reason


def test_health_and_metrics(stack: Stack) -> None:
    """/healthz checks Redis and the broker (and names what it checked only to monitors);
    /metrics speaks Prometheus to monitors; the API has a schema."""
    with stack.http(stack.token("prometheus", "monitor")) as http:
        health = http.get("/healthz")
        metrics = http.get("/metrics").text
        schema = http.get("/openapi.json").json()
    with stack.anonymous() as http:
        public_health = http.get("/healthz")
        public_metrics = http.get("/metrics")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "checks": {"redis": "ok", "broker": "ok"}}
    assert public_health.json() == {"status": "ok"} and public_metrics.status_code == 401
    assert "loa_reports_accepted_total" in metrics
    assert "/api/reports" in schema["paths"]


def test_metrics_time_the_web_s_part_of_each_report_accepted(stack: Stack) -> None:
    """`loa_report_accept_seconds`: one observation a POST /api/reports, so that a slow
    accept can be told apart from the web's own time."""
    monitor = stack.token("prometheus-accepts", "monitor")

    def accepts() -> float:
        with stack.http(monitor) as http:
            text = http.get("/metrics").text
        counts = [line for line in text.splitlines()
                  if line.startswith("loa_report_accept_seconds_count")]
        return float(counts[0].split()[-1]) if counts else 0.0

    before = accepts()
    post_report(stack, report_body("hn-ba-dinh"))
    # observed as the middleware unwinds, just after the answer went out
    wait_for(lambda: accepts() > before, timeout_s=5)
    assert accepts() == before + 1
