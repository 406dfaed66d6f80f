"""`loa accounts ...`: who may log in to the web console."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer
from rich.table import Table

from coordinator.accounts import (
    AccountError,
    list_accounts,
    new_account,
    remove_account,
    save_account,
)
from coordinator.cli.common import city_or_fail, env_settings, fail, out, with_redis

accounts_app = typer.Typer(help="Who may log in to the web console.", no_args_is_help=True)


@accounts_app.command("add")
def accounts_add(
    username: str,
    role: Annotated[str, typer.Option(help="duty_officer, approver or admin")],
    person: Annotated[str, typer.Option(help="the person in config/ (required for approvers)")
                      ] = "",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from stdin (else one is generated)")] = False,
) -> None:
    """Create an account, or replace its role and password."""
    if role not in ("duty_officer", "approver", "admin"):
        raise fail(f"role: {role!r} is not one of duty_officer, approver, admin")
    city = city_or_fail(env_settings())
    try:
        account = new_account(username, role, person, city)  # type: ignore[arg-type]
    except AccountError as exc:
        raise fail(str(exc)) from exc
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
    try:
        with_redis(lambda r, k, s: save_account(r, k, account, password, by="cli"))
    except AccountError as exc:
        raise fail(str(exc)) from exc
    out.print(f"account [bold]{account.username}[/] ({account.role}"
              f"{', ' + account.person_id if account.person_id else ''}) saved")
    if not password_stdin:
        out.print(f"password: [bold]{password}[/]  (shown once)")


@accounts_app.command("list")
def accounts_list() -> None:
    """Every account."""
    table = Table("username", "role", "person", "name", "created")
    for a in with_redis(lambda r, k, s: list_accounts(r, k)):
        table.add_row(a.username, a.role, a.person_id or "-", a.name,
                      a.created_at.isoformat()[:19])
    out.print(table)


@accounts_app.command("remove")
def accounts_remove(username: str) -> None:
    """Remove an account (its sessions end at their next request)."""
    if not with_redis(lambda r, k, s: remove_account(r, k, username, by="cli")):
        raise fail(f"no account {username!r}")
    out.print(f"account {username} removed")

