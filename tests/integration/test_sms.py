"""Approvers answer by SMS; residents STOP and START — through the real twilio SDK, the local
Twilio-compatible sandbox, and our signed webhooks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.stack import Stack, running, wait_for
from tests.integration.test_pipeline import post_report

pytestmark = pytest.mark.integration
AN = "+84901000101"  # nguyen-van-an, construction level 1, prefers SMS


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


def prompt_sms(stack: Stack, approval: dict[str, Any]) -> dict[str, Any]:
    """The prompt SMS the sandbox received for an approval."""
    found: dict[str, Any] = wait_for(lambda: next(
        (m for m in stack.sms_sent(AN) if approval["id"] in m["body"]), None), 15,
        "the prompt SMS")
    return found


def test_yes_by_sms_approves(sms_stack: Stack) -> None:
    """The prompt reaches the approver's phone; `YES <code>` approves and publishes."""
    incident_id, approval = flood(sms_stack, "hn-ba-dinh-kim-ma")
    sms = prompt_sms(sms_stack, approval)
    assert f"YES {approval['reply_code']}" in sms["body"] and sms["from"] == "+15005550006"
    answer = sms_stack.sms_reply(AN, f"yes {approval['reply_code']}")
    assert answer["status"] == 200
    assert "approved; statement" in answer["body"]
    sms_stack.wait_for_status(incident_id, "published")
    approved = [e for e in sms_stack.timeline(incident_id) if e["action"] == "approval.approved"]
    assert approved[0]["interface"] == "sms" and approved[0]["actor"] == "nguyen-van-an"
    # The statement's own SMS text carries its short web link, which leads to its page.
    statement_id = f"STM-{incident_id[4:]}-1"
    with sms_stack.http() as http:
        statement = http.get(f"/api/statements/{statement_id}").json()
        short = http.get(f"/s/{statement_id}")
    sms_text = next(t["body"] for t in statement["texts"] if t["channel"] == "sms")
    assert sms_text.endswith(f"{sms_stack.web_url}/s/{statement_id}")
    assert short.status_code == 307 and short.headers["location"] == f"/statements/{statement_id}"


def test_no_with_a_reason_rejects(sms_stack: Stack) -> None:
    """`KHÔNG <code> <reason>` (Vietnamese, with diacritics) rejects with that reason."""
    incident_id, approval = flood(sms_stack, "hn-ba-dinh-dien-bien")
    prompt_sms(sms_stack, approval)
    answer = sms_stack.sms_reply(AN, f"Không {approval['reply_code']} số liệu chưa đúng")
    assert "rejected" in answer["body"]
    sms_stack.wait_for_status(incident_id, "returned")
    assert sms_stack.incident(incident_id)["status_reason"].endswith("số liệu chưa đúng")


def test_the_code_from_another_number_is_refused_and_audited(sms_stack: Stack) -> None:
    """Only a phone the request was sent to may answer its code; others are refused."""
    incident_id, approval = flood(sms_stack, "hn-hoan-kiem-trang-tien")
    for stranger in ("+84909999999", "+84901000001"):  # unknown; a duty officer
        answer = sms_stack.sms_reply(stranger, f"YES {approval['reply_code']}")
        assert f"Code {approval['reply_code']} is not valid for this number" in answer["body"]
    refused = [json_entry for json_entry in _audit(sms_stack)
               if json_entry["action"] == "sms.answer_refused"]
    assert {e["actor"] for e in refused} >= {"+84909999999", "+84901000001"}
    assert sms_stack.incident(incident_id)["status"] == "awaiting_approval"


def test_a_forged_signature_is_refused(sms_stack: Stack) -> None:
    """A webhook without Twilio's signature gets 403 and changes nothing."""
    with httpx.Client(base_url=sms_stack.web_url) as http:
        answer = http.post("/hooks/twilio/sms", data={"From": AN, "Body": "STOP"},
                           headers={"X-Twilio-Signature": "forged"})
        status = http.post("/hooks/twilio/status", data={"MessageSid": "SMx"})
    assert answer.status_code == 403 and status.status_code == 403
    assert not sms_stack.redis.sismember(sms_stack.keys.opted_out("sms"), AN)


def test_stop_then_start(sms_stack: Stack) -> None:
    """After STOP nothing more goes to the number (the prompt is skipped); START brings it back."""
    answer = sms_stack.sms_reply(AN, "STOP")
    assert "no more messages" in answer["body"]
    _, approval = flood(sms_stack, "hn-tay-ho-quang-an")
    delivery = f"prompt:{approval['id']}:request:1:0:nguyen-van-an"
    wait_for(lambda: sms_stack.redis.hget(sms_stack.keys.delivery(delivery), "status"), 15,
             "the prompt delivery")
    assert sms_stack.redis.hget(sms_stack.keys.delivery(delivery), "status") == "skipped"
    assert not [m for m in sms_stack.sms_sent(AN) if approval["id"] in m["body"]]

    assert "again" in sms_stack.sms_reply(AN, "START")["body"]
    _, later = flood(sms_stack, "hn-long-bien-bo-de")
    prompt_sms(sms_stack, later)


def test_join_by_sms_subscribes_the_phone(sms_stack: Stack) -> None:
    """`JOIN <area>` (or `ĐĂNG KÝ`) signs the phone up; an unknown area is named."""
    assert "Unknown: hn-atlantis" in sms_stack.sms_reply("+84913000001",
                                                         "JOIN hn-atlantis")["body"]
    answer = sms_stack.sms_reply("+84913000001", "Đăng ký hn-hoang-mai")
    assert "Subscribed" in answer["body"]
    exported = sms_stack.cli("subscribers", "export").stdout
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
    prompt_sms(sms_stack, approval)
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


def _audit(stack: Stack) -> list[dict[str, Any]]:
    import json

    return [json.loads(fields["event"]) for _, fields in stack.redis.xrange(stack.keys.audit())]
