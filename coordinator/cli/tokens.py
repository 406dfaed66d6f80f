"""`loa tokens ...` and `loa login`: API credentials for machines and people."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import (
    JsonOpt,
    city_or_fail,
    env_settings,
    fail,
    out,
    print_json,
    with_redis,
)
from coordinator.cli.credentials import keep_token, local_operator
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis
from coordinator.tokens import (
    TokenError,
    issue_token,
    list_tokens,
    new_token_record,
    principal_for_token,
    revoke_token,
)

# Tokens are made and revoked by the operator at this machine (with Redis's address), never
# with a token: the option says why, as on the commands where it is a choice.
ReasonOpt = Annotated[str, typer.Option(
    "--operator-reason", help="why (recorded in the audit trail)")]
tokens_app = typer.Typer(help="API tokens: who may call the API, with which role and scope.",
                         no_args_is_help=True)


@tokens_app.command("add")
def tokens_add(
    name: str,
    role: Annotated[str, typer.Option(help="reporter, duty_officer, approver, translator, "
                                           "press, partner, monitor or admin")],
    department: Annotated[str, typer.Option(help="scope: a department of config/")] = "",
    area: Annotated[str, typer.Option(help="scope: an area (and the areas inside it)")] = "",
    person: Annotated[str, typer.Option(help="the person it belongs to (approvers)")] = "",
    operator_reason: ReasonOpt = "",
) -> None:
    """Make a token and print it once; Loa keeps only its hash. Made by the operator at
    this machine: `--operator-reason` says why, in the audit trail."""
    settings = env_settings()
    operator = local_operator(operator_reason or "loa tokens add")
    try:
        record = new_token_record(name, role, city_or_fail(settings), department, area, person,
                                  by=operator.actor)
    except TokenError as exc:
        raise fail(str(exc)) from exc

    async def work(redis: Redis, keys: Keys, s: Settings) -> str:
        return await issue_token(redis, keys, record, reason=operator_reason)

    token = with_redis(work)  # a TokenError is a LoaError: with_redis makes it a failure
    out.print(f"token [bold]{name}[/] ({record.role.value}"
              f"{', ' + record.principal().scope if record.principal().scope else ''}); "
              "shown once, keep it safe:")
    print(token)


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    """Live tokens: name, role, scope, when and by whom made (never the token)."""
    records = with_redis(lambda r, k, s: list_tokens(r, k))
    if as_json:
        print_json([r.model_dump(mode="json") for r in records])
        return
    table = Table("name", "role", "scope", "made (UTC)", "by")
    for r in records:
        table.add_row(r.name, r.role.value, r.principal().scope or "city",
                      r.created_at.isoformat()[:19], r.created_by)
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: str, operator_reason: ReasonOpt = "") -> None:
    """Revoke a token: the next request with it is refused (`--operator-reason`: why, in
    the audit trail)."""
    operator = local_operator(operator_reason or "loa tokens revoke")
    if not with_redis(lambda r, k, s: revoke_token(r, k, name, by=operator.actor,
                                                   reason=operator_reason)):
        raise fail(f"no token named {name!r} (see `loa tokens list`)")
    out.print(f"revoked {name}")


def login(
    token_stdin: Annotated[bool, typer.Option(
        "--token-stdin", help="read the token from stdin (else you are asked for it)")] = False,
) -> None:
    """Keep an API token for the CLI's commands (in the data folder, readable by you alone)."""
    settings = env_settings()
    token = sys.stdin.readline().strip() if token_stdin else typer.prompt(
        "API token", hide_input=True).strip()
    principal = with_redis(lambda r, k, s: principal_for_token(r, k, token))
    if principal is None:
        raise fail("that token is not valid (unknown or revoked)")
    path = keep_token(settings, token)
    out.print(f"logged in as {principal.actor} ({principal.role.value}); token kept in {path}")
