"""Approvers answer by SMS; residents STOP and START — through the real twilio SDK, the local
Twilio-compatible sandbox, and our signed webhooks."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from channels.twilio_webhooks import RETRY_OVERRIDES
from tests.integration.factories import post_report
from tests.integration.stack import Stack, running, wait_for
from tests.integration.webclient import WebSession

pytestmark = pytest.mark.integration
AN = "+84901000101"  # nguyen-van-an, construction level 1, prefers SMS
MAI = "+84901000001"  # tran-thi-mai, a duty officer
CODE = re.compile(r"YES (\d{6}) ")


@pytest.fixture(scope="module")
def sms_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running Loa whose SMS goes to the sandbox."""
    with running(tmp_path_factory.mktemp("sms"), sms=True) as stack:
        yield stack


def flood(stack: Stack, area: str) -> tuple[str, dict[str, Any]]:
    """File a flood report; (incident id, approval) once the request exists."""
    report_id = post_report(stack, {"kind": "flood", "severity": "severe", "area": area,
                                    "title": f"Ngập {uuid.uuid4().hex[:6]}"})
    incident_id = wait_for(lambda: stack.incident_of(report_id), 30, "report taken in")
    stack.wait_for_status(incident_id, "awaiting_approval")
    with stack.http() as http:
        approval = http.get(f"/api/incidents/{incident_id}").json()["approval"]
    return incident_id, approval


def prompt_sms(stack: Stack, approval_id: str, to: str = AN) -> dict[str, Any]:
    """The prompt SMS the sandbox received for an approval."""
    found: dict[str, Any] = wait_for(lambda: next(
        (m for m in stack.sms_sent(to) if approval_id in m["body"]), None), 15,
        "the prompt SMS")
    return found


def code_of(stack: Stack, approval_id: str) -> str:
    """The reply code the approver reads in their SMS, as they would."""
    found = CODE.search(prompt_sms(stack, approval_id)["body"])
    assert found, "no code in the prompt SMS"
    return found.group(1)


def reply(stack: Stack, sender: str, body: str, sid: str | None = None) -> dict[str, Any]:
    """An inbound SMS through the sandbox to the webhook URL as configured at Twilio (with
    the retry overrides); `sid` replays a MessageSid."""
    answer: dict[str, Any] = httpx.post(f"{stack.sms_url}/_sandbox/inbound", json={
        "from": sender, "to": "+15005550006", "body": body,
        "url": f"{stack.web_url}/hooks/twilio/sms{RETRY_OVERRIDES}",
        **({"sid": sid} if sid else {})}, timeout=60).json()
    return answer


def second_version(stack: Stack, incident_id: str, account: tuple[str, str, str], form_at: str,
                   form: dict[str, str]) -> str:
    """Make an incident's draft version 2 with a console form (`drafts`, `translate`) as a
    new account (username, role, person), logged in with its second factor when it has one;
    the id of its approval request."""
    username, role, person = account
    password = stack.account(username, role, person)
    session = WebSession(stack.web_url)
    try:
        session.login(username, password, stack.totp_secrets.get(username))
        session.get(f"/console/incidents/{incident_id}")
        answer = session.post_form(f"/console/incidents/{incident_id}/{form_at}", form).text
    finally:
        session.close()
    assert "draft version 2 made" in answer, answer
    return f"APR-{incident_id[4:]}-2"


def draft_sms_text(stack: Stack, incident_id: str, version: int = 1) -> str:
    """The Vietnamese SMS text of a draft, as stored."""
    draft = json.loads(stack.redis.get(stack.keys.draft(f"DRF-{incident_id[4:]}-{version}")))
    return str(next(t["body"] for t in draft["texts"]
                    if (t["channel"], t["language"]) == ("sms", "vi")))


def test_yes_by_sms_approves_the_text_the_sms_showed(sms_stack: Stack) -> None:
    """The prompt carries the draft's SMS text and a 6-digit code; `YES <code>` approves and
    publishes exactly that text."""
    incident_id, approval = flood(sms_stack, "hn-ba-dinh-kim-ma")
    sms = prompt_sms(sms_stack, approval["id"])
    shown = " ".join(draft_sms_text(sms_stack, incident_id).split())
    assert f"«{shown}»" in sms["body"] and sms["from"] == "+15005550006"
    code = code_of(sms_stack, approval["id"])
    answer = reply(sms_stack, AN, f"yes {code}")
    assert answer["status"] == 200
    assert "approved; statement" in answer["body"]
    sms_stack.wait_for_status(incident_id, "published")
    approved = [e for e in sms_stack.timeline(incident_id) if e["action"] == "approval.approved"]
    assert approved[0]["interface"] == "sms" and approved[0]["actor"] == "nguyen-van-an"
    statement_id = f"STM-{incident_id[4:]}-1"
    with sms_stack.http() as http:
        statement = http.get(f"/api/statements/{statement_id}").json()
        short = http.get(f"/s/{statement_id}")
    sms_text = next(t["body"] for t in statement["texts"] if t["channel"] == "sms")
    assert " ".join(sms_text.split()) == shown
    assert sms_text.endswith(f"{sms_stack.web_url}/s/{statement_id}")
    assert short.status_code == 307 and short.headers["location"] == f"/statements/{statement_id}"


def test_no_with_a_reason_rejects(sms_stack: Stack) -> None:
    """`KHÔNG <code> <reason>` (Vietnamese, with diacritics) rejects with that reason."""
    incident_id, approval = flood(sms_stack, "hn-ba-dinh-dien-bien")
    answer = reply(sms_stack, AN, f"Không {code_of(sms_stack, approval['id'])} số liệu chưa đúng")
    assert "rejected" in answer["body"]
    sms_stack.wait_for_status(incident_id, "returned")
    assert sms_stack.incident(incident_id)["status_reason"].endswith("số liệu chưa đúng")


def test_the_code_from_another_number_is_refused_and_audited(sms_stack: Stack) -> None:
    """Only the approver's own phone may use their code; others are refused, and the audit
    names them without their number."""
    incident_id, approval = flood(sms_stack, "hn-hoan-kiem-trang-tien")
    code = code_of(sms_stack, approval["id"])
    for stranger in ("+84909999999", MAI):  # unknown; a duty officer
        answer = reply(sms_stack, stranger, f"YES {code}")
        assert f"Code {code} is not valid for this number" in answer["body"]
    refused = [e for e in _audit(sms_stack) if e["action"] == "sms.answer_refused"]
    actors = {e["actor"] for e in refused}
    assert "tran-thi-mai" in actors and any(a.startswith("sms:") for a in actors)
    assert not any("+8490" in json.dumps(e) or code in json.dumps(e) for e in refused)
    assert sms_stack.incident(incident_id)["status"] == "awaiting_approval"


def test_a_code_computed_the_old_way_is_refused(sms_stack: Stack) -> None:
    """The unkeyed 4-digit hash of the approval id, which anyone could compute, answers
    nothing."""
    incident_id, approval = flood(sms_stack, "hn-hoan-kiem-hang-bac")
    prompt_sms(sms_stack, approval["id"])
    old = 1000 + int(hashlib.sha256(approval["id"].encode()).hexdigest(), 16) % 9000
    answer = reply(sms_stack, AN, f"YES {old}")
    assert f"Code {old} is not valid for this number" in answer["body"]
    assert sms_stack.incident(incident_id)["status"] == "awaiting_approval"


def test_no_api_answer_shows_a_code(sms_stack: Stack) -> None:
    """Approval listings, the incident and its timeline carry no reply code."""
    incident_id, approval = flood(sms_stack, "hn-dong-da-van-mieu")
    code = code_of(sms_stack, approval["id"])
    with sms_stack.http() as http:
        answers = [http.get("/api/approvals", params={"all": "true"}),
                   http.get("/api/approvals"), http.get(f"/api/incidents/{incident_id}"),
                   http.get(f"/api/incidents/{incident_id}/timeline")]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert code not in answer.text and "reply_code" not in answer.text
    assert approval["id"] in answers[0].text


def test_a_replayed_webhook_applies_once(sms_stack: Stack) -> None:
    """The same MessageSid twice: one decision, one STOP in the audit; the replay gets the
    first answer."""
    incident_id, approval = flood(sms_stack, "hn-hai-ba-trung-bach-khoa")
    sid = "SM" + secrets.token_hex(16)
    first = reply(sms_stack, AN, f"YES {code_of(sms_stack, approval['id'])}", sid)
    again = reply(sms_stack, AN, f"YES {code_of(sms_stack, approval['id'])}", sid)
    assert "approved; statement" in first["body"] and again == first
    sms_stack.wait_for_status(incident_id, "published")
    actions = sms_stack.timeline_actions(incident_id)
    assert actions.count("approval.approved") == 1 and "decision.refused" not in actions

    resident, stop_sid = "+84913000077", "SM" + secrets.token_hex(16)
    assert "no more messages" in reply(sms_stack, resident, "STOP", stop_sid)["body"]
    assert "no more messages" in reply(sms_stack, resident, "STOP", stop_sid)["body"]
    stops = [e for e in _audit(sms_stack)
             if e["action"] == "sms.stop" and e["detail"].get("message") == stop_sid]
    assert len(stops) == 1 and stops[0]["actor"].startswith("sms:")
    assert resident not in json.dumps(stops[0])


def test_a_code_for_version_1_does_not_approve_version_2(sms_stack: Stack) -> None:
    """After a redraft the old code is refused (the request was superseded) and the new
    prompt, with the new text and a new code, approves version 2."""
    incident_id, approval = flood(sms_stack, "hn-dong-da-lang-ha")
    old_code = code_of(sms_stack, approval["id"])
    second = second_version(sms_stack, incident_id, ("mai-sms", "duty_officer", "tran-thi-mai"),
                            "drafts", {"purpose": "edit", "note": "sửa số liệu", "body:sms:vi":
                                       "[Loa] Ngập phố Láng Thượng 30 cm, tránh đi qua."})
    new_code = code_of(sms_stack, second)
    assert new_code != old_code
    assert "«[Loa] Ngập phố Láng Thượng 30 cm, tránh đi qua.»" in prompt_sms(
        sms_stack, second)["body"]
    stale = reply(sms_stack, AN, f"YES {old_code}")
    assert "replaced by a newer version" in stale["body"]
    assert "approved; statement" in reply(sms_stack, AN, f"YES {new_code}")["body"]
    sms_stack.wait_for_status(incident_id, "published")
    assert sms_stack.incident(incident_id)["statement_id"] == f"STM-{incident_id[4:]}-2"
    # A text kept from version 1 carries version 1's link, never published: it leads to
    # what the incident published since, not to a 404.
    kept = httpx.get(f"{sms_stack.web_url}/s/STM-{incident_id[4:]}-1", timeout=30)
    assert (kept.status_code, kept.headers["location"]) == (
        307, f"/statements/STM-{incident_id[4:]}-2")
    assert httpx.get(f"{sms_stack.web_url}/s/STM-99999-1", timeout=30).status_code == 404


def test_a_forged_signature_is_refused(sms_stack: Stack) -> None:
    """A webhook without Twilio's signature gets 403 and changes nothing; one with an API
    token that is no token gets 401, on both hooks (the status callbacks' plain route is
    behind the same lock as the others)."""
    with httpx.Client(base_url=sms_stack.web_url) as http:
        answer = http.post("/hooks/twilio/sms", data={"From": AN, "Body": "STOP",
                                                      "MessageSid": "SM" + "0" * 32},
                           headers={"X-Twilio-Signature": "forged"})
        status = http.post("/hooks/twilio/status", data={"MessageSid": "SMx"})
        bogus = [http.post(f"/hooks/twilio/{hook}", data={"MessageSid": "SMx"},
                           headers={"Authorization": "Bearer loa_bogus"})
                 for hook in ("sms", "status")]
    assert answer.status_code == 403 and status.status_code == 403
    assert [b.status_code for b in bogus] == [401, 401]
    assert all(b.headers["www-authenticate"] == "Bearer" for b in bogus)
    assert not sms_stack.redis.sismember(sms_stack.keys.opted_out("sms"), AN)
    assert not sms_stack.redis.exists(sms_stack.keys.inbound_sms("SM" + "0" * 32))


def test_stop_then_start(sms_stack: Stack) -> None:
    """After STOP nothing more goes to the number (the prompt is skipped); START brings it back.
    The audit names the number by a keyed hash, not the number."""
    answer = sms_stack.sms_reply(AN, "STOP")
    assert "no more messages" in answer["body"]
    try:
        _, approval = flood(sms_stack, "hn-tay-ho-quang-an")
        key = sms_stack.keys.delivery(f"prompt:{approval['id']}:request:1:0:nguyen-van-an")
        # `sending` is the worker's claim, held for the moment it takes to decide to skip
        status = wait_for(lambda: (sms_stack.redis.hget(key, "status") or "sending") != "sending"
                          and sms_stack.redis.hget(key, "status"), 15, "the prompt's outcome")
        assert status == "skipped"
        assert not [m for m in sms_stack.sms_sent(AN) if approval["id"] in m["body"]]
    finally:  # the module's other tests prompt this approver: never leave them opted out
        restarted = sms_stack.sms_reply(AN, "START")["body"]
    assert "again" in restarted
    _, later = flood(sms_stack, "hn-long-bien-bo-de")
    prompt_sms(sms_stack, later["id"])
    keywords = [e for e in _audit(sms_stack) if e["action"] in ("sms.stop", "sms.start")]
    assert keywords and not any(AN in json.dumps(e) for e in keywords)


def test_join_by_sms_subscribes_the_phone(sms_stack: Stack) -> None:
    """`JOIN <area>` (or `ĐĂNG KÝ`) signs the phone up; an unknown area is named."""
    # JOIN subscribes in the city's language (config/languages.yaml), as it always has
    assert "Không có: hn-atlantis" in sms_stack.sms_reply("+84913000001",
                                                          "JOIN hn-atlantis")["body"]
    answer = sms_stack.sms_reply("+84913000001", "Đăng ký hn-hoang-mai")
    assert "Đã đăng ký nhận tin Loa về Quận Hoàng Mai" in answer["body"]  # in Vietnamese
    exported = sms_stack.subscribers("export").stdout
    assert any(line.startswith("+84913000001,,vi,hn-hoang-mai,*,sms,resident,active")
               for line in exported.splitlines())


def test_help_answers_who_we_are(sms_stack: Stack) -> None:
    """HELP says who we are and how to stop."""
    assert "Reply STOP to stop" in sms_stack.sms_reply("+84909999998", "help")["body"]


def test_throttling_is_retried_and_sends_once(sms_stack: Stack) -> None:
    """A 429 then a 500 from the provider: the prompt is retried with backoff and arrives
    once; the status callbacks then mark it delivered."""
    httpx.post(f"{sms_stack.sms_url}/_sandbox/throttle", json={"status": 429, "count": 1})
    httpx.post(f"{sms_stack.sms_url}/_sandbox/throttle", json={"status": 500, "count": 1})
    _, approval = flood(sms_stack, "hn-cau-giay")
    prompt_sms(sms_stack, approval["id"])
    delivery = f"prompt:{approval['id']}:request:1:0:nguyen-van-an"
    wait_for(lambda: sms_stack.redis.hget(sms_stack.keys.delivery(delivery), "status")
             == "delivered", 15, "the delivered status callback")
    assert len([m for m in sms_stack.sms_sent(AN) if approval["id"] in m["body"]]) == 1


def test_a_failed_handset_is_recorded_from_the_status_callback(sms_stack: Stack) -> None:
    """The provider reports the SMS undelivered (30003): the delivery says so, with the code.
    (Last in this module: it resets the sandbox.)"""
    httpx.post(f"{sms_stack.sms_url}/_sandbox/fail", json={"number": AN, "error_code": 30003})
    try:
        _, approval = flood(sms_stack, "hn-thanh-xuan")
        delivery = sms_stack.keys.delivery(f"prompt:{approval['id']}:request:1:0:nguyen-van-an")
        wait_for(lambda: sms_stack.redis.hget(delivery, "status") == "undelivered", 15,
                 "the undelivered status callback")
        assert sms_stack.redis.hget(delivery, "error_code") == "30003"
    finally:
        httpx.post(f"{sms_stack.sms_url}/_sandbox/reset")


def test_a_yes_sent_while_the_broker_is_down_is_applied_later(
        make_stack: Callable[..., Stack]) -> None:
    """The broker is gone when the approver answers: the answer is kept (200, "received"),
    and once a broker is back the web process sends the decision from Redis, once."""
    stack = make_stack(sms=True)
    stack.start_worker_and_web()
    incident_id, approval = flood(stack, "hn-ba-dinh-ngoc-ha")
    code = code_of(stack, approval["id"])
    stack.stop_worker()
    stack.broker.stop()
    answer = reply(stack, AN, f"YES {code}")
    assert answer["status"] == 200 and "Loa got your message" in answer["body"]
    assert stack.redis.zcard(stack.keys.inbound_pending()) == 1
    stack.restart_broker()
    stack.start_worker()
    stack.wait_for_status(incident_id, "published", timeout_s=90)
    wait_for(lambda: stack.redis.zcard(stack.keys.inbound_pending()) == 0, 30,
             "the inbound SMS finished")
    assert stack.timeline_actions(incident_id).count("approval.approved") == 1


def _audit(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in stack.redis.xrange(stack.keys.audit())]


def test_a_translation_is_decided_by_a_link_that_shows_every_text(sms_stack: Stack) -> None:
    """A translator's version publishes texts the SMS cannot show (its other languages and
    channels): its prompt carries no reply code, only where to decide with every text in
    view (the inbox here, where links are not enabled; the signed link's page otherwise)."""
    incident_id, _ = flood(sms_stack, "hn-dong-da-kham-thien")
    second = second_version(sms_stack, incident_id, ("dich-sms", "translator", ""), "translate", {
        "title:web:en": "Flooding", "body:web:en": "Avoid the street.",
        "body:sms:en": "[Loa] Flooding on Kham Thien, the translator's words."})
    prompt = prompt_sms(sms_stack, second)["body"]
    assert not CODE.search(prompt)
    assert prompt.endswith(f"Trả lời tại / Answer at: {sms_stack.web_url}/inbox/{second}")
