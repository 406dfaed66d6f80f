"""What the SMS sandbox answers, as Twilio's Messages API would: error bodies, request
validation, the statuses a message passes, list filters, webhook retry overrides, and the
control requests (`/_sandbox/...`). Pure functions and models; the app is ``sandbox.sms``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sandbox.gsm7 import num_segments

API_VERSION = "2010-04-01"
SANDBOX_SENDER = "+15005550006"  # Twilio's magic test number, used when a service picks the sender
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
DELIVERY_ERRORS: dict[int, str] = {
    21610: "Attempt to send to unsubscribed recipient",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30034: "Message from an unregistered number",
}
FAILED_BEFORE_SENT = frozenset({21610, 30006, 30034})
LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
PRICE_PER_SEGMENT = 0.0079
Step = tuple[str, int | None]


def rfc2822(moment: datetime | None = None) -> str:
    """A timestamp the way Twilio writes them: 'Thu, 24 Aug 2023 05:01:45 +0000'."""
    return format_datetime((moment or datetime.now(UTC)).replace(microsecond=0))


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's error JSON body, which the SDK turns into TwilioRestException."""
    return JSONResponse({"code": code, "message": message, "status": status,
                         "more_info": f"https://www.twilio.com/docs/errors/{code}"},
                        status_code=status)


def refusal(form: Mapping[str, str]) -> JSONResponse | None:
    """The 400 Twilio answers for a bad create request, or None when it is acceptable."""
    to, body = form.get("To", ""), form.get("Body", "")
    if not to:
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not E164.match(to):
        return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return twilio_error(400, 21603, "A 'From' phone number is required.")
    if not body:
        return twilio_error(400, 21602, "Message body is required.")
    if len(body) > 1600:
        return twilio_error(400, 21617,
                            "The concatenated message body exceeds the 1600 character limit.")
    return None


def status_plan(initial: str, error_code: int | None) -> list[Step]:
    """The statuses a message passes after creation, each with its error code."""
    steps: list[Step] = [("queued", None)] if initial == "accepted" else []
    if error_code is None:
        return [*steps, ("sent", None), ("delivered", None)]
    if error_code in FAILED_BEFORE_SENT:
        return [*steps, ("failed", error_code)]
    return [*steps, ("sent", None), ("undelivered", error_code)]


def sent_on(message: Mapping[str, Any]) -> date | None:
    """The GMT day a message was sent, for the DateSent filters."""
    sent = message.get("date_sent")
    return parsedate_to_datetime(sent).date() if sent else None


def matches(message: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Whether a message passes the list filters To, From, DateSent, DateSent<, DateSent>."""
    if any(query.get(k) not in (None, message[k.lower()]) for k in ("To", "From")):
        return False
    bounds = {k: date.fromisoformat(query[k][:10]) for k in LIST_FILTERS[2:] if query.get(k)}
    if not bounds:
        return True
    sent = sent_on(message)
    # Twilio's "DateSent<" and "DateSent>" are inclusive (read as <= and >= on the wire)
    return sent is not None and (sent == bounds.get("DateSent", sent)
                                 and sent <= bounds.get("DateSent<", sent)
                                 and sent >= bounds.get("DateSent>", sent))


class FailRule(BaseModel):
    """Body of POST /_sandbox/fail."""

    number: str
    error_code: int


class ThrottleRule(BaseModel):
    """Body of POST /_sandbox/throttle."""

    status: int
    count: int = Field(ge=0)


class InboundSms(BaseModel):
    """Body of POST /_sandbox/inbound: an SMS a resident sends to one of our numbers."""

    from_: str = Field(alias="from")
    to: str
    body: str
    url: str  # may end in Twilio's connection overrides, e.g. `#rc=3&rp=all`
    sid: str | None = Field(default=None, pattern=r"^SM[0-9a-f]{32}$")  # to replay one


RETRY_POLICIES = frozenset({"4xx", "5xx", "ct", "rt", "all"})


def webhook_overrides(url: str) -> tuple[str, int, frozenset[str]]:
    """(URL without its fragment, retry count, retry policies) of a webhook URL with
    Twilio's connection overrides; raises ValueError for an out-of-range count or an
    unknown policy (Twilio's errors 11237 and 11243)."""
    base, _, fragment = url.partition("#")
    pairs = dict(parse_qsl(fragment, keep_blank_values=True))
    count = int(pairs.get("rc", "1"))
    policies = frozenset(pairs.get("rp", "ct").split(","))
    if not 0 <= count <= 5:
        raise ValueError(f"rc must be 0 to 5, not {count}")
    if not policies <= RETRY_POLICIES:
        raise ValueError(f"unknown retry policy in rp={pairs['rp']}")
    return base, count, policies


def failure_kind(reply: httpx.Response | None, error: httpx.HTTPError | None) -> str | None:
    """Which retry policy a webhook attempt's failure falls under (None: it succeeded)."""
    if error is not None:
        return "rt" if isinstance(error, httpx.ReadTimeout) else "ct"
    assert reply is not None
    return "5xx" if reply.status_code >= 500 else "4xx" if reply.status_code >= 400 else None


def advance(message: dict[str, Any], status: str, code: int | None) -> None:
    """Record a status change on the stored resource, so fetch and list see it."""
    now = rfc2822()
    message.update(status=status, date_updated=now, error_code=code,
                   error_message=DELIVERY_ERRORS.get(code, f"Error {code}") if code else None)
    if status == "queued":  # the service has now picked a sender
        message["from"] = message["from"] or SANDBOX_SENDER
        message["num_segments"] = str(num_segments(message["body"]))
    if status in ("sent", "failed"):
        message["date_sent"] = now
    if status == "sent":
        message["price"] = f"-{PRICE_PER_SEGMENT * int(message['num_segments']):.5f}"


def not_found(request: Request) -> JSONResponse:
    """Twilio's 404 for an unknown resource or another account's path."""
    return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")
