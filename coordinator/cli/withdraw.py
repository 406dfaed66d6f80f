"""`loa withdraw`: stop a statement sent in error."""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.access import Action
from coordinator.cli.common import err, out, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis
from coordinator.statements.withdrawal import Withdrawal, withdraw_statement


def withdraw(
    statement_id: str,
    reason: Annotated[str, typer.Option(help="why it is withdrawn (audited, and shown on "
                                             "the statement's page)")],
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Withdraw a statement sent in error: its messages not handed over yet stop at once,
    and it leaves the public pages. Then publish a correction as a new version."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> Withdrawal:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.incident_steer)
        return await withdraw_statement(redis, keys, statement_id, principal.actor, reason,
                                        "cli", utcnow())

    done = with_redis(work)
    (out if done.done else err).print(done.message)
    if not done.done:
        raise typer.Exit(2)
