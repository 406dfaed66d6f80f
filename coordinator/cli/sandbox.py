"""`loa sandbox ...` and `loa outbox`: the local stand-ins for Twilio and SMTP.

The stand-ins are the top-level ``sandbox`` package, not part of the product: these
commands run it as its own program (`python -m sandbox.sms`), never import it."""

from __future__ import annotations

import mailbox
import os
import sys
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coordinator.cli.common import JsonOpt, env_settings, err, out, print_json
from coordinator.settings import load_settings

SANDBOX_SID = "AC" + "0" * 32
sandbox_app = typer.Typer(help="Local stand-ins for Twilio and SMTP (what `loa up` starts).",
                          no_args_is_help=True)


@sandbox_app.command("sms")
def sandbox_sms(
    port: Annotated[int, typer.Option()] = 8081,
    account_sid: Annotated[str, typer.Option(envvar="LOA_TWILIO_ACCOUNT_SID")] = SANDBOX_SID,
    auth_token: Annotated[str, typer.Option(envvar="LOA_TWILIO_AUTH_TOKEN")] = "sandbox-token",
    callbacks: Annotated[bool, typer.Option(help="post status callbacks")] = True,
) -> None:
    """A local Twilio-compatible Messages API (the real twilio SDK talks to it over HTTP)."""
    # The token travels in the environment, not in argv (which every local user can read).
    env = {**os.environ, "LOA_TWILIO_ACCOUNT_SID": account_sid,
           "LOA_TWILIO_AUTH_TOKEN": auth_token}
    run_module("sandbox.sms", ["--port", str(port), *([] if callbacks else ["--no-callbacks"])],
               env)


@sandbox_app.command("smtp")
def sandbox_smtp(
    port: Annotated[int, typer.Option()] = 8025,
    maildir: Annotated[Path | None, typer.Option(help="where received mail is kept")] = None,
) -> None:
    """A local SMTP server that keeps what it receives (see `loa outbox`)."""
    where = maildir or load_settings().data_dir / "mail"
    run_module("sandbox.smtp", ["--port", str(port), "--maildir", str(where)], dict(os.environ))


def run_module(module: str, args: list[str], env: dict[str, str]) -> None:
    """Become `python -m module args` (exec: the same process id, so whoever started this
    command stops the stand-in itself)."""
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env)


def read_outbox(maildir: Path, limit: int = 50) -> list[dict[str, str]]:
    """The newest emails the SMTP stand-in kept in its Maildir: date, to, subject."""
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


def outbox(as_json: JsonOpt = False) -> None:
    """The dev outbox: what the local SMS and SMTP sandboxes received."""
    import httpx

    settings = env_settings()
    sms: list[dict[str, Any]] = []
    if settings.twilio_base_url:
        try:
            sms = httpx.get(f"{settings.twilio_base_url}/_sandbox/messages", timeout=5).json()
        except httpx.HTTPError as exc:
            err.print(f"SMS sandbox not reachable at {settings.twilio_base_url}: {exc}")
    emails = read_outbox(settings.data_dir / "mail")
    if as_json:
        print_json({"sms": sms, "email": emails})
        return
    table = Table("channel", "to", "status", "text / subject")
    for m in sms:
        table.add_row("sms", m["to"], m["status"], m["body"])
    for e in emails:
        table.add_row("email", e["to"], "received", e["subject"])
    out.print(table)


