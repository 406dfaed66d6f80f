"""A local SMTP server for `loa up` (aiosmtpd): keeps every email it receives in a Maildir,
which the dev outbox lists (`loa outbox`)."""

from __future__ import annotations

import mailbox
import signal
import threading
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MaildirHandler:
    """Stores each accepted message in a Maildir."""

    def __init__(self, maildir: Path) -> None:
        # Maildir makes its cur/new/tmp only when it creates the folder itself.
        maildir.parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(str(maildir), create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message; 250 when stored."""
        self.box.add(envelope.content)
        return "250 Message accepted for delivery"


def read_outbox(maildir: Path, limit: int = 50) -> list[dict[str, str]]:
    """The newest emails of the dev outbox: date, to, subject."""
    if not (maildir / "cur").exists():
        return []
    box = mailbox.Maildir(str(maildir), create=False)
    rows = []
    for key in box.keys():  # noqa: SIM118 - iterating a Maildir yields messages, not keys
        parsed = message_from_bytes(box.get_bytes(key), policy=default_policy)
        rows.append({"date": str(parsed["Date"] or ""), "to": str(parsed["To"] or ""),
                     "subject": str(parsed["Subject"] or ""),
                     "message_id": str(parsed["Message-ID"] or "")})
    return sorted(rows, key=lambda r: r["date"], reverse=True)[:limit]


def run_smtp_sandbox(host: str, port: int, maildir: Path) -> None:
    """Serve SMTP until SIGTERM/SIGINT."""
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        stopped.wait()
    finally:
        controller.stop()
