"""Channel rules that need no server: SMS commands, contacts, backoff, Twilio error mapping,
what the channel base enforces, and reading Twilio's webhooks."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from channels.base import (
    MessageTooLong,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
    refusal_for_length,
)
from channels.contacts import InvalidContact, e164, email_address
from channels.delivery import backoff_s, send_with_retries
from channels.sms import SmsChannel, SmsConfigError, TwilioAccount, classify
from channels.twilio_http import _quoted
from channels.twilio_webhooks import (
    RETRY_OVERRIDES,
    InboundText,
    InvalidWebhook,
    StatusUpdate,
    as_ours,
    inbound_text,
    reply_twiml,
    signature_valid,
    status_update,
)
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
    """429 and 5xx are worth retrying; other errors are not. After a 429 Twilio has no
    message of the request; after a 5xx it may (rarely), so a retry asks first."""
    error = classify(status, code, "x")
    assert isinstance(error, kind)
    if isinstance(error, TransientDeliveryError):
        assert error.maybe_taken == (status != 429)


def test_a_permanent_error_says_why() -> None:
    """An unsubscribed recipient is named as such, with Twilio's code."""
    error = classify(400, 21610, "Attempt to send to unsubscribed recipient")
    assert str(error) == "sms: recipient unsubscribed (replied STOP) (Twilio 21610)"


def test_a_text_longer_than_max_length_is_refused() -> None:
    """Up to the limit passes; one character more is a permanent, named refusal."""
    fits = OutboundMessage(id="d1", recipient="+84901234567", text="a" * 1600)
    assert refusal_for_length("sms", 1600, fits) is None
    assert refusal_for_length("email", None, OutboundMessage("d2", "x@y.example", "a" * 10**5)
                              ) is None
    error = refusal_for_length("sms", 1600, OutboundMessage("d3", "+84901234567", "a" * 1601))
    assert isinstance(error, MessageTooLong) and isinstance(error, PermanentDeliveryError)
    assert (str(error), error.code) == (
        "sms: d3: the text has 1601 characters, more than the 1600 this channel takes",
        "too-long")


class FlakyProvider:
    """A channel whose sends and looks answer from scripts: an exception to raise, or a
    value (a send's receipt, a look's find, None for not found); it counts both."""

    name = "sms"
    max_length = None

    def __init__(self, sends: list[object], looks: list[object]) -> None:
        self.sends, self.looks = sends, looks
        self.sent = self.looked = 0

    async def send(self, message: OutboundMessage) -> Receipt:
        answer = self.sends[self.sent]
        self.sent += 1
        if isinstance(answer, Exception):
            raise answer
        return Receipt(message.id, provider_id=str(answer), status="queued")

    async def look(self) -> Receipt | None:
        answer = self.looks[self.looked]
        self.looked += 1
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else Receipt("m", provider_id=str(answer),
                                                   status="sent")


MESSAGE = OutboundMessage("m", "+84901234567", "Cảnh báo")
AWAY = TransientDeliveryError("sms: Twilio not reachable")


async def test_a_retry_is_not_sent_until_the_provider_has_said_it_lacks_the_message() -> None:
    """A send that timed out, then two looks that fail: nothing is sent on those attempts
    (the first send may have reached the provider); the third look answers "not found" and
    the message goes once more: four attempts of the five allowed, three waits."""
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    provider = FlakyProvider([AWAY, "SM2"], [AWAY, AWAY, None])
    receipt = await send_with_retries(provider, MESSAGE, 5, sleep=no_wait,  # type: ignore[arg-type]
                                      before_retry=provider.look)
    assert (provider.sent, provider.looked, len(waits)) == (2, 3, 3)
    assert receipt.provider_id == "SM2"


async def test_a_provider_that_never_answers_a_look_gets_the_message_on_the_last_attempt(
        ) -> None:
    """After a send that timed out, looks that all fail: nothing more is sent until the
    last attempt, which sends without an answer (a possible duplicate rather than an
    alert never sent)."""
    async def no_wait(seconds: float) -> None:
        return None

    provider = FlakyProvider([AWAY, "SM9"], [AWAY] * 5)
    receipt = await send_with_retries(provider, MESSAGE, 6, sleep=no_wait,  # type: ignore[arg-type]
                                      before_retry=provider.look)
    assert (provider.sent, provider.looked, receipt.provider_id) == (2, 5, "SM9")


async def test_a_retry_after_an_answer_sends_without_looking() -> None:
    """Twilio answered 429 (it made no message): the retry sends without asking; after a
    timeout (no answer) the next one asks first."""
    async def no_wait(seconds: float) -> None:
        return None

    busy = TransientDeliveryError("sms: Twilio answered 429 (20429)", maybe_taken=False)
    provider = FlakyProvider([busy, AWAY, "SM3"], [None])
    receipt = await send_with_retries(provider, MESSAGE, 4, sleep=no_wait,  # type: ignore[arg-type]
                                      before_retry=provider.look)
    assert (provider.sent, provider.looked, receipt.provider_id) == (3, 1, "SM3")


async def test_an_orphan_is_looked_for_before_its_first_send() -> None:
    """An attempt a crash cut off (`look_first`): found at the provider, it is not sent;
    a look that fails is retried. A look the provider refuses for good (403 on the list,
    say) never fails the delivery itself, nor uses the attempts up: it is sent at once."""
    async def no_wait(seconds: float) -> None:
        return None

    found = FlakyProvider([], [AWAY, "SM1"])
    receipt = await send_with_retries(found, MESSAGE, 3, sleep=no_wait,  # type: ignore[arg-type]
                                      before_retry=found.look, look_first=True)
    assert (found.sent, found.looked, receipt.provider_id) == (0, 2, "SM1")
    refused = FlakyProvider(["SM5"], [PermanentDeliveryError("sms: no access", code="20003")]
                            * 3)
    receipt = await send_with_retries(refused, MESSAGE, 3, sleep=no_wait,  # type: ignore[arg-type]
                                      before_retry=refused.look, look_first=True)
    assert (refused.sent, refused.looked, receipt.provider_id) == (1, 1, "SM5")


class CountingLimit:
    """A RateLimit that counts its turns."""

    def __init__(self) -> None:
        self.turns = 0

    async def acquire(self) -> None:
        self.turns += 1


ACCOUNT = TwilioAccount("AC" + "0" * 32, "token", from_number="+15005550006",
                        base_url="http://127.0.0.1:9")


async def test_the_base_refuses_before_the_rate_limit_and_the_provider() -> None:
    """An SMS over 1600 characters never takes a turn of the rate limit nor reaches Twilio
    (the account's URL answers nothing)."""
    limit = CountingLimit()
    channel = SmsChannel(ACCOUNT, limit)
    with pytest.raises(MessageTooLong):
        await channel.send(OutboundMessage("d1", "+84901234567", "x" * 1601))
    assert limit.turns == 0
    await channel.close()


async def test_the_base_takes_a_turn_of_the_rate_limit_per_send() -> None:
    """A message that fits waits for the rate limit once, then goes to the provider (here
    unreachable: a transient error, after one turn)."""
    limit = CountingLimit()
    channel = SmsChannel(ACCOUNT, limit)
    try:
        with pytest.raises(TransientDeliveryError):
            await channel.send(OutboundMessage("d1", "+84901234567", "Cảnh báo"))
    finally:
        await channel.close()
    assert limit.turns == 1


def test_an_sms_channel_needs_credentials_and_a_sender() -> None:
    """An SMS channel without an account SID or a from number is refused, naming the setting."""
    with pytest.raises(SmsConfigError, match="LOA_TWILIO_ACCOUNT_SID"):
        SmsChannel(TwilioAccount("", "token", from_number="+15005550006"))
    with pytest.raises(SmsConfigError, match="LOA_TWILIO_FROM_NUMBER"):
        SmsChannel(TwilioAccount("AC1", "token"))


URL = "https://loa.example/hooks/twilio/sms"
FORM = {"MessageSid": "SM" + "ab" * 16, "From": "+84901234567", "Body": "YES 123456"}


def test_a_webhook_signature_is_checked_with_or_without_the_overrides() -> None:
    """Twilio signs the URL as configured: with the retry fragment, or without it."""
    plain = RequestValidator("tok").compute_signature(URL, FORM)
    with_fragment = RequestValidator("tok").compute_signature(URL + RETRY_OVERRIDES, FORM)
    assert signature_valid("tok", URL, FORM, plain)
    assert signature_valid("tok", URL, FORM, with_fragment)
    assert not signature_valid("other", URL, FORM, plain)
    assert not signature_valid(None, URL, FORM, plain)
    assert not signature_valid("tok", URL, {**FORM, "Body": "NO 123456"}, plain)
    assert not signature_valid("tok", URL, FORM, "é" + plain[1:])  # not ASCII: refused
    # Twilio's own variants still count: the URL signed with its default port
    assert signature_valid("tok", "https://loa.example/hooks", FORM,
                           RequestValidator("tok").compute_signature(
                               "https://loa.example:443/hooks", FORM))


def test_inbound_sms_and_status_callbacks_are_read_from_the_form() -> None:
    """Twilio's form reads into an inbound text or a status update; a bad MessageSid is refused."""
    assert inbound_text(FORM) == InboundText("SM" + "ab" * 16, "+84901234567", "YES 123456")
    with pytest.raises(InvalidWebhook, match="MessageSid"):
        inbound_text({"MessageSid": "SMnothex", "Body": "x"})
    assert status_update({"MessageSid": "SM1", "MessageStatus": "undelivered",
                          "ErrorCode": "30003"}) == StatusUpdate("SM1", "undelivered", "30003")
    assert status_update({}) == StatusUpdate("", "", "")
    # Twilio's other endings, as Loa keeps them (a status asked of Twilio too)
    assert [as_ours(s) for s in ("read", "canceled", "sent", "delivered", "failed")] == [
        "delivered", "failed", "sent", "delivered", "failed"]
    assert status_update({"MessageSid": "SM1", "MessageStatus": "read"}).status == "delivered"


def test_an_sms_is_answered_in_escaped_twiml() -> None:
    """A reply to an SMS is one TwiML Message with its text XML-escaped."""
    assert reply_twiml("A & B <ok>") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>A &amp; B &lt;ok&gt;'
        "</Message></Response>")


def test_the_sms_form_is_quoted_as_urlencode_quotes_it() -> None:
    """The remembered quoting gives the bytes `urlencode` gives (Vietnamese, an emoji, the
    characters a form must escape), the second time too."""
    form = {"To": "+84901234567", "From": "+15005550006", "StatusCallback":
            "https://loa.example/hooks/twilio/status?x=1&y=2",
            "Body": "Ngập sâu ở Giảng Võ 🌊 — tránh đường & chờ hướng dẫn: 100% an toàn"}
    for _ in range(2):
        assert urlencode(form, doseq=True, quote_via=_quoted) == urlencode(form, doseq=True)
