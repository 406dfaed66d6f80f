"""Channel rules that need no server: SMS commands, contacts, backoff, Twilio error mapping."""

from __future__ import annotations

import random

import pytest

from channels.base import PermanentDeliveryError, TransientDeliveryError
from channels.contacts import InvalidContact, e164, email_address
from channels.delivery import backoff_s
from channels.sms import classify
from coordinator.inbound.sms_commands import Answer, Keyword, Unknown, parse_sms


@pytest.mark.parametrize(("body", "expected"), [
    ("STOP", Keyword("stop")), ("stopall", Keyword("stop")), ("Unsubscribe", Keyword("stop")),
    ("cancel", Keyword("stop")), ("END", Keyword("stop")), ("quit", Keyword("stop")),
    ("START", Keyword("start")), ("unstop", Keyword("start")), ("HELP", Keyword("help")),
    ("YES 4821", Answer("approve", "4821", "")), ("y 4821", Answer("approve", "4821", "")),
    ("Có 4821", Answer("approve", "4821", "")), ("co 4821", Answer("approve", "4821", "")),
    ("Đồng ý 4821", Answer("approve", "4821", "")),
    ("NO 4821 số liệu sai", Answer("reject", "4821", "số liệu sai")),
    ("n 4821", Answer("reject", "4821", "")), ("KHÔNG 4821 chưa rõ", Answer("reject", "4821",
                                                                          "chưa rõ")),
    ("khong 4821", Answer("reject", "4821", "")), ("yes", Answer("approve", "", "")),
    ("xin chào", Unknown("xin chào")),
])
def test_inbound_sms_is_classified(body: str, expected: object) -> None:
    """Carrier keywords and approver answers, English and Vietnamese, any case, with or
    without diacritics."""
    assert parse_sms(body) == expected


def test_phone_numbers_become_e164() -> None:
    """Vietnamese numbers without the country code take region VN."""
    assert e164("0901 234 567") == "+84901234567"
    assert e164("+84 90 123 4567") == "+84901234567"
    assert e164("(415) 555-2671", "US") == "+14155552671"
    with pytest.raises(InvalidContact):
        e164("12")


def test_email_addresses_are_validated() -> None:
    """A bad address names what is wrong."""
    assert email_address("An.NV@XayDung.Hanoi.example") == "An.NV@xaydung.hanoi.example"
    with pytest.raises(InvalidContact, match="@-sign"):
        email_address("an.nv.example")


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    """Retry n waits between 0 and min(cap, base * 2^(n-1))."""
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (12, 30.0)]:
        waits = [backoff_s(attempt, rng) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # the full range is used


@pytest.mark.parametrize(("status", "code", "kind"), [
    (429, 20429, TransientDeliveryError), (500, 20500, TransientDeliveryError),
    (503, None, TransientDeliveryError), (400, 21211, PermanentDeliveryError),
    (400, 21610, PermanentDeliveryError), (400, 99999, PermanentDeliveryError),
])
def test_twilio_errors_are_translated(status: int, code: int | None, kind: type) -> None:
    """429 and 5xx are worth retrying; other errors are not."""
    assert isinstance(classify(status, code, "x"), kind)


def test_a_permanent_error_says_why() -> None:
    """An unsubscribed recipient is named as such, with Twilio's code."""
    error = classify(400, 21610, "Attempt to send to unsubscribed recipient")
    assert str(error) == "sms: recipient unsubscribed (replied STOP) (Twilio 21610)"
