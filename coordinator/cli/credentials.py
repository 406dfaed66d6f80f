"""Who is at the keyboard: the CLI acts with a credential, like every other client.

An API token (`--token`, `LOA_TOKEN`, or the one `loa login` kept in the data folder)
makes the command act as the token's holder, under the same policy as the web. Without
one, the person at this machine may act as the local operator, but only by saying why
(`--operator-reason`): the audit trail then records `operator:USER` and the reason,
never someone else's name.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

from coordinator.access import Action, Principal, Role, decide
from coordinator.errors import LoaError
from coordinator.events import AuditEvent
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis, record_audit
from coordinator.tokens import principal_for_token

TokenOpt = Annotated[str | None, typer.Option(
    "--token", help="an API token (else LOA_TOKEN, else the one `loa login` kept)")]
ReasonOpt = Annotated[str, typer.Option(
    "--operator-reason", help="act as the local operator instead of with a token, saying why "
                              "(recorded in the audit trail)")]


def token_file(settings: Settings) -> Path:
    """Where `loa login` keeps this user's token."""
    return settings.data_dir / "cli-token"


def keep_token(settings: Settings, token: str) -> Path:
    """Write the token for later commands, readable by this user alone."""
    path = token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token.strip() + "\n")
    return path


def stored_token(settings: Settings) -> str | None:
    """The token `loa login` kept, if any."""
    try:
        return token_file(settings).read_text().strip() or None
    except OSError:
        return None


def local_operator(reason: str) -> Principal:
    """The person at this machine, acting as its operator for a stated reason."""
    return Principal(kind="operator", username=getpass.getuser(), role=Role.admin,
                     reason=reason.strip())


async def cli_principal(redis: Redis, keys: Keys, settings: Settings, token: str | None,
                        operator_reason: str, action: Action) -> Principal:
    """The caller of an acting command, allowed to take `action`; LoaError saying how to
    get a credential, or why it is refused."""
    if operator_reason.strip():
        principal = local_operator(operator_reason)
    else:
        token = token or os.environ.get("LOA_TOKEN") or stored_token(settings)
        if not token:
            raise LoaError("this command needs a credential: `loa login` with an API token "
                           "(`loa tokens add`), --token, LOA_TOKEN, or act as the local "
                           "operator with --operator-reason \"why\"")
        found = await principal_for_token(redis, keys, token)
        if found is None:
            raise LoaError("the API token is not valid (unknown or revoked)")
        principal = found
    verdict = decide(principal, action)
    if not verdict.allowed:
        raise LoaError(verdict.why)
    return principal


async def audit_cli_action(redis: Redis, keys: Keys, principal: Principal, action: str,
                           subject: str | None = None, **detail: object) -> None:
    """One audit entry for what a CLI command did: its caller, and the local operator's
    reason."""
    reason = {"reason": principal.reason} if principal.reason else {}
    await record_audit(redis, keys, AuditEvent(actor=principal.actor, action=action,
                                               interface="cli", subject=subject,
                                               detail={**detail, **reason}))
