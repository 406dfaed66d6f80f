"""What Loa records about a delivery names its addressee, never the contact; requests made
before reports needed a credential never publish by themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from coordinator.dispatch.handover import addressee, without_contact
from coordinator.events import ApprovalRequest, DeliveryRequest


def test_a_providers_refusal_is_recorded_without_the_address() -> None:
    """SMTP quotes the refused address (in any case): the record names the subscriber."""
    request = DeliveryRequest(id="STM-00001-1:email:sub-1", channel="email",
                              recipient="Bob@Example.org", text="x", subscriber_id="sub-1")
    refusal = ("[SMTPRecipientRefused(550, '5.1.1 <bob@example.org> unknown', "
               "'Bob@Example.org')]")
    assert without_contact(refusal, request) == (
        "[SMTPRecipientRefused(550, '5.1.1 <sub-1> unknown', 'sub-1')]")


def test_a_prompts_delivery_is_addressed_to_its_person() -> None:
    """Approval prompts name the person; a confirmation code names its own delivery."""
    prompt = DeliveryRequest(id="prompt:p1", channel="sms", recipient="+84901000101",
                             text="x", person_id="nguyen-van-an")
    code = DeliveryRequest(id="optin:sms:ab12", channel="sms", recipient="+84901000101",
                           text="x", purpose="confirmation")
    assert (addressee(prompt), addressee(code)) == ("person:nguyen-van-an",
                                                   "confirmation:optin:sms:ab12")
    assert without_contact("21211: '+84901000101' is not a valid phone number", prompt) == (
        "21211: 'person:nguyen-van-an' is not a valid phone number")


def test_a_request_from_before_issue_10_holds_instead_of_publishing() -> None:
    """A stored request with the old shared reply code froze `publish` without knowing who
    opened the incident: it is read as `hold`; a new request keeps its rule."""
    old = {"id": "APR-00001-1", "incident_id": "INC-00001", "draft_id": "DRF-00001-1",
           "playbook_id": "fire", "severity": "extreme", "chain": [],
           "deadline": datetime(2026, 11, 22, tzinfo=UTC).isoformat(),
           "on_exhausted": "publish", "reply_code": "4821"}
    assert ApprovalRequest.model_validate(old).on_exhausted == "hold"
    assert ApprovalRequest.model_validate_json(json.dumps(old)).on_exhausted == "hold"
    assert ApprovalRequest.model_validate_json(ApprovalRequest.model_validate(
        {k: v for k, v in old.items() if k != "reply_code"}).model_dump_json()
    ).on_exhausted == "publish"
