"""`loa sandbox ...` and `loa outbox`: the local stand-ins for Twilio and SMTP."""

from __future__ import annotations

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
    from coordinator.sandbox.sms import run_sms_sandbox

    run_sms_sandbox("127.0.0.1", port, account_sid, auth_token, callbacks)


@sandbox_app.command("smtp")
def sandbox_smtp(
    port: Annotated[int, typer.Option()] = 8025,
    maildir: Annotated[Path | None, typer.Option(help="where received mail is kept")] = None,
) -> None:
    """A local SMTP server that keeps what it receives (see `loa outbox`)."""
    from coordinator.sandbox.smtp import run_smtp_sandbox

    run_smtp_sandbox("127.0.0.1", port, maildir or load_settings().data_dir / "mail")


def outbox(as_json: JsonOpt = False) -> None:
    """The dev outbox: what the local SMS and SMTP sandboxes received."""
    import httpx

    from coordinator.sandbox.smtp import read_outbox

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


