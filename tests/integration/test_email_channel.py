"""The email channel over a real SMTP conversation (aiosmtplib -> aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from channels.email import EmailChannel, SmtpServer, build_email
from tests.integration.smtp_server import Inbox, smtp_server


@pytest.fixture
def server() -> Iterator[tuple[int, Inbox]]:
    with smtp_server() as running:
        yield running


def channel_for(port: int) -> EmailChannel:
    return EmailChannel(SmtpServer(host="127.0.0.1", port=port,
                                   sender="Loa Hà Nội <loa@hanoi.example>"))


def message(i: int, **changes: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "id": f"STM-00001-1:email:sub-{i}", "recipient": f"nguoi{i}@dan.example",
        "subject": "Cảnh báo ngập úng tại Quận Ba Đình", "text": "Nước ngập 40 cm.",
        "html": "<p>Nước ngập <b>40 cm</b>.</p>", "language": "vi",
        "unsubscribe_url": f"http://127.0.0.1:8080/unsubscribe/tok{i}"}
    return OutboundMessage(**(fields | changes))  # type: ignore[arg-type]


async def test_a_fan_out_reuses_one_connection(server: tuple[int, Inbox]) -> None:
    """Twenty emails go over one SMTP connection, each multipart with the expected headers:
    its own To, Message-ID and leaving link (a long one as it is, not an encoded word)."""
    port, inbox = server
    channel = channel_for(port)
    long_link = "http://127.0.0.1:8080/unsubscribe/" + "t" * 200
    try:
        receipts = [await channel.send(message(i)) for i in range(19)]
        receipts.append(await channel.send(message(19, unsubscribe_url=long_link)))
    finally:
        await channel.close()
    assert channel.connections == 1 and len(inbox.sessions) == 1
    assert len(inbox.messages) == 20
    first = inbox.messages[0]
    assert first["Subject"] == "Cảnh báo ngập úng tại Quận Ba Đình"
    assert first["Message-ID"] == "<STM-00001-1.email.sub-0@hanoi.example>"
    assert receipts[0].provider_id == first["Message-ID"]
    assert first["List-Unsubscribe"] == "<http://127.0.0.1:8080/unsubscribe/tok0>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["Date"] and first["Content-Language"] == "vi"
    parts = {part.get_content_type(): part.get_content() for part in first.iter_parts()}
    assert parts["text/plain"].strip() == "Nước ngập 40 cm."
    assert "<b>40 cm</b>" in parts["text/html"]
    assert [(m["To"], m["Message-ID"]) for m in inbox.messages[18:]] == [
        ("nguoi18@dan.example", "<STM-00001-1.email.sub-18@hanoi.example>"),
        ("nguoi19@dan.example", "<STM-00001-1.email.sub-19@hanoi.example>")]
    assert inbox.messages[19]["List-Unsubscribe"] == f"<{long_link}>"
    assert inbox.messages[19]["Subject"] == first["Subject"]


async def test_a_refused_recipient_is_permanent(server: tuple[int, Inbox]) -> None:
    """A 5xx on RCPT is a permanent failure; the next email still goes."""
    port, inbox = server
    channel = channel_for(port)
    try:
        with pytest.raises(PermanentDeliveryError):
            await channel.send(message(1, recipient="bounce@dan.example"))
        await channel.send(message(2))
    finally:
        await channel.close()
    assert inbox.recipients == [["nguoi2@dan.example"]]


async def test_a_recipient_deferred_with_4xx_is_tried_again_not_failed(
        server: tuple[int, Inbox]) -> None:
    """Greylisting, or a mailbox's rate limit, answers RCPT with 4xx: try again later (no
    message was taken, so the retry cannot make two); only 5xx is a failure for good."""
    port, inbox = server
    channel = channel_for(port)
    try:
        with pytest.raises(TransientDeliveryError, match="451") as deferred:
            await channel.hand_over(message(1, recipient="greylisted@dan.example"))
        assert deferred.value.maybe_taken is False
        await channel.hand_over(message(1, recipient="greylisted@dan.example"))
    finally:
        await channel.close()
    assert inbox.recipients == [["greylisted@dan.example"]]


def test_header_injection_is_impossible() -> None:
    """Newlines in a subject cannot add a header: they are folded into the value."""
    mail = build_email(message(1, subject="Hi\r\nBcc: victim@x.example"), "Loa <loa@x.example>",
                       "x.example")
    assert mail["Bcc"] is None
    assert mail["Subject"] == "Hi Bcc: victim@x.example"
    assert "\nBcc:" not in mail.as_string()


def test_an_invalid_address_is_refused_before_sending() -> None:
    """email-validator names what is wrong; no SMTP conversation happens."""
    with pytest.raises(PermanentDeliveryError, match="not-an-address"):
        build_email(message(1, recipient="not-an-address"), "Loa <loa@x.example>", "x.example")
