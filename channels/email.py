"""Email over SMTP (aiosmtplib): multipart text and HTML, one connection reused across a
fan-out, a Message-ID derived from the delivery id, and one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import asyncio
import copy
import functools
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import ClassVar

import aiosmtplib
from aiosmtplib.email import flatten_message

from channels.base import (
    BaseChannel,
    ChannelConfigError,
    OutboundMessage,
    PermanentDeliveryError,
    RateLimit,
    Receipt,
    TransientDeliveryError,
    still_wanted,
)
from channels.contacts import InvalidContact, email_address

MAX_HEADER_LINE = 998
"""RFC 5322's limit on a line, CRLF excluded."""


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
    connections: int = 16


def one_line(text: str) -> str:
    """A header value: whitespace (newlines included) folded to single spaces."""
    return " ".join(text.split())


def message_id(delivery_id: str, domain: str) -> str:
    """`<STM-00001-1.email.sub-7@domain>`: the delivery id as a valid msg-id (dot-atom)."""
    local = re.sub(r"[^A-Za-z0-9.-]+", ".", delivery_id).strip(".")
    return f"<{local}@{domain}>"


@functools.lru_cache(maxsize=64)
def shared_part(sender: str, subject: str, text: str, html: str | None, language: str,
                cte_type: str) -> bytes:
    """What every recipient of the same text gets alike (From, Subject, Content-Language,
    the MIME headers and the body), flattened once: the email package's header handling
    costs milliseconds a message, and a fan-out sends one text to thousands."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = one_line(sender)
    mail["Subject"] = one_line(subject or "Loa")
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    if language:  # after set_content, which clears it
        mail["Content-Language"] = one_line(language)
    return flatten_message(mail, cte_type=cte_type)


def own_headers(message: OutboundMessage, recipient: str, domain: str) -> bytes | None:
    """The headers that differ per recipient (To, Date, Message-ID, the one-click leaving
    link), written out; None when one needs more than plain ASCII on one line (then the
    whole message is built by the email package). Pure but for the date."""
    lines = [f"To: {recipient}", f"Date: {formatdate(localtime=False, usegmt=True)}",
             f"Message-ID: {message_id(message.id, domain)}"]
    if message.unsubscribe_url:
        lines += [f"List-Unsubscribe: <{one_line(message.unsubscribe_url)}>",
                  "List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
    if any(len(line) > MAX_HEADER_LINE for line in lines) or not all(
            line.isascii() for line in lines):
        return None
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


def checked_recipient(message: OutboundMessage) -> str:
    """The recipient's address, normalised; raises PermanentDeliveryError for an invalid
    one."""
    try:
        return email_address(message.recipient)
    except InvalidContact as exc:
        raise PermanentDeliveryError(f"email: {exc}", code="invalid-address") from exc


def build_email(message: OutboundMessage, sender: str, domain: str) -> EmailMessage:
    """The MIME message; raises PermanentDeliveryError for an invalid recipient.

    Header injection is impossible by construction: every header value goes
    through `one_line`, and the `SMTP` policy refuses a CR or LF in a header."""
    recipient = checked_recipient(message)
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
    """Sends email over a pool of SMTP connections (`server.connections`), each reused for
    conversation after conversation and reconnected when it drops; rate limited by the
    `limiter` it is given, if any (the base waits for it)."""

    name: ClassVar[str] = "email"
    max_length: ClassVar[int | None] = None

    def __init__(self, server: SmtpServer, limiter: RateLimit | None = None) -> None:
        if not server.host:
            raise ChannelConfigError("LOA_SMTP_HOST is not set")
        super().__init__(limiter)
        self.server = server
        self.domain = server.sender.rsplit("@", 1)[-1].strip("> ")
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(server.connections)
        self.connections = 0  # how many times we connected (reuse is visible in tests)
        self.envelope_from = parseaddr(one_line(server.sender))[1]

    def with_limiter(self, limiter: RateLimit) -> EmailChannel:
        """The same channel, over the same connections, on another rate limit (a lane)."""
        lane = copy.copy(self)  # shares the idle connections and the slots
        lane.limiter = limiter
        return lane

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.server
        smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.tls,
                               start_tls=s.starttls if not s.tls else False, timeout=30)
        await smtp.connect()
        try:  # the extensions it offers decide how a message is written
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            await smtp.helo()
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
        recipient = checked_recipient(message)
        own = own_headers(message, recipient, self.domain)
        # the email package builds the whole message only when a header needs it
        mail = build_email(message, self.server.sender, self.domain) if own is None else None
        async with self._slots:  # one conversation per connection at a time
            await still_wanted(message)
            smtp = self._idle.pop() if self._idle else None
            try:
                if smtp is None or not smtp.is_connected:
                    smtp = await self._connect()
                if mail is not None:
                    await smtp.send_message(mail)
                else:
                    await self._send(smtp, message, recipient, own or b"")
            except aiosmtplib.SMTPRecipientsRefused as exc:
                if any(r.code < 500 for r in exc.recipients):  # greylisted, a mailbox's rate:
                    raise TransientDeliveryError(  # later (no message was taken, so no two)
                        f"email: recipient deferred: {exc.recipients[0].code} "
                        f"{exc.recipients[0].message}", maybe_taken=False) from exc
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
        return Receipt(message.id, provider_id=message_id(message.id, self.domain),
                       status="sent")

    async def _send(self, smtp: aiosmtplib.SMTP, message: OutboundMessage, recipient: str,
                    own: bytes) -> None:
        """Send the recipient's own headers and the shared part, as `send_message` would
        send the whole message (8BITMIME when the server offers it)."""
        eight = smtp.supports_extension("8BITMIME")
        shared = shared_part(self.server.sender, message.subject, message.text, message.html,
                             message.language, "8bit" if eight else "7bit")
        await smtp.sendmail(self.envelope_from, [recipient], own + shared,
                            mail_options=["BODY=8BITMIME"] if eight else [])

    async def close(self) -> None:
        """QUIT and close every idle connection."""
        await super().close()
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
