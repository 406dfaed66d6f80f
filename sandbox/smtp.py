"""A local SMTP server for `loa up` (aiosmtpd): keeps every email it receives in a Maildir,
which the dev outbox lists (`loa outbox`). Run it with `python -m sandbox.smtp`."""

from __future__ import annotations

import argparse
import mailbox
import signal
import threading
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


def main(argv: list[str] | None = None) -> None:
    """`python -m sandbox.smtp --port 8025 --maildir DIR`: serve SMTP on 127.0.0.1."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.smtp", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--maildir", type=Path, required=True,
                        help="where received mail is kept")
    args = parser.parse_args(argv)
    run_smtp_sandbox(args.host, args.port, args.maildir)


if __name__ == "__main__":
    main()
