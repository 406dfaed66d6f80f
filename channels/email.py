"""Email over SMTP (aiosmtplib): multipart text and HTML, one connection reused across a
fan-out, a Message-ID derived from the delivery id, and one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import ClassVar

import aiosmtplib

from channels.base import (
    BaseChannel,
    ChannelConfigError,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
    still_wanted,
)
from channels.contacts import InvalidContact, email_address


@dataclass(frozen=True)
class SmtpServer:
    """Where and as whom the email channel sends: the SMTP server, its login if any, the
    From address, and how many connections one process may hold to it."""

    host: str
    port: int = 25
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "Loa Hà Nội <loa@hanoi.example>"
    connections: int = 4


def one_line(text: str) -> str:
    """A header value: whitespace (newlines included) folded to single spaces."""
    return " ".join(text.split())


def message_id(delivery_id: str, domain: str) -> str:
    """`<STM-00001-1.email.sub-7@domain>`: the delivery id as a valid msg-id (dot-atom)."""
    local = re.sub(r"[^A-Za-z0-9.-]+", ".", delivery_id).strip(".")
    return f"<{local}@{domain}>"


def build_email(message: OutboundMessage, sender: str, domain: str) -> EmailMessage:
    """The MIME message; raises PermanentDeliveryError for an invalid recipient.

    Header injection is impossible by construction: every header value goes
    through `one_line`, and the `SMTP` policy refuses a CR or LF in a header."""
    try:
        recipient = email_address(message.recipient)
    except InvalidContact as exc:
        raise PermanentDeliveryError(f"email: {exc}", code="invalid-address") from exc
    mail = EmailMessage(policy=SMTP)
    mail["From"] = one_line(sender)
    mail["To"] = recipient
    mail["Subject"] = one_line(message.subject or "Loa")
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    # Deterministic: a re-send of the same delivery is recognisable (and deduplicable).
    mail["Message-ID"] = message_id(message.id, domain)
    if message.unsubscribe_url:
        mail["List-Unsubscribe"] = f"<{one_line(message.unsubscribe_url)}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    if message.language:  # after set_content, which clears it
        mail["Content-Language"] = one_line(message.language)
    return mail


class EmailChannel(BaseChannel):
    """Sends email over a small pool of SMTP connections (`server.connections`), each
    reused for conversation after conversation and reconnected when it drops."""

    name: ClassVar[str] = "email"
    max_length: ClassVar[int | None] = None

    def __init__(self, server: SmtpServer) -> None:
        if not server.host:
            raise ChannelConfigError("LOA_SMTP_HOST is not set")
        super().__init__()
        self.server = server
        self.domain = server.sender.rsplit("@", 1)[-1].strip("> ")
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(server.connections)
        self.connections = 0  # how many times we connected (reuse is visible in tests)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.server
        smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.tls,
                               start_tls=s.starttls if not s.tls else False, timeout=30)
        await smtp.connect()
        if s.username and s.password is not None:
            try:
                await smtp.login(s.username, s.password)
            except BaseException:
                smtp.close()
                raise
        self.connections += 1
        return smtp

    async def hand_over(self, message: OutboundMessage) -> Receipt:
        """Send one email; raises Permanent/TransientDeliveryError."""
        mail = build_email(message, self.server.sender, self.domain)
        async with self._slots:  # one conversation per connection at a time
            await still_wanted(message)
            smtp = self._idle.pop() if self._idle else None
            try:
                if smtp is None or not smtp.is_connected:
                    smtp = await self._connect()
                await smtp.send_message(mail)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise PermanentDeliveryError(f"email: recipient refused: {exc}",
                                             code="refused") from exc
            except aiosmtplib.SMTPResponseException as exc:
                _close(smtp)
                smtp = None
                if 500 <= exc.code < 600:
                    raise PermanentDeliveryError(f"email: {exc.code} {exc.message}",
                                                 code=str(exc.code)) from exc
                raise TransientDeliveryError(f"email: {exc.code} {exc.message}") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                _close(smtp)
                smtp = None
                raise TransientDeliveryError(f"email: SMTP not reachable: {exc!r}") from exc
            except asyncio.CancelledError:  # cut off mid-conversation: never reuse it
                _close(smtp)
                smtp = None
                raise
            finally:
                if smtp is not None:
                    self._idle.append(smtp)
        return Receipt(message.id, provider_id=str(mail["Message-ID"]), status="sent")

    async def close(self) -> None:
        """QUIT and close every idle connection."""
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except aiosmtplib.SMTPException:
                    smtp.close()


def _close(smtp: aiosmtplib.SMTP | None) -> None:
    """Close a connection that failed mid-conversation (it is not reused)."""
    if smtp is not None:
        smtp.close()
