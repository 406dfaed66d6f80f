"""`loa accounts ...`: who may log in to the web console."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer
from rich.table import Table

from coordinator.accounts import (
    AccountError,
    enrol_second_factor,
    list_accounts,
    new_account,
    remove_account,
    save_account,
    second_factor,
)
from coordinator.cli.common import (
    JsonOpt,
    city_or_fail,
    env_settings,
    fail,
    out,
    print_json,
    with_redis,
)
from coordinator.cli.credentials import local_operator
from coordinator.errors import ConfigError
from coordinator.keys import Keys
from coordinator.second_factor import KEY_PURPOSE, enrolment_uri, new_secret, seal
from coordinator.settings import Settings
from coordinator.state import Redis

accounts_app = typer.Typer(help="Who may log in to the web console.", no_args_is_help=True)


@accounts_app.command("add")
def accounts_add(
    username: str,
    role: Annotated[str, typer.Option(help="duty_officer, approver, translator or admin")],
    person: Annotated[str, typer.Option(help="the person in config/ (required for approvers)")
                      ] = "",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from stdin (else one is generated)")] = False,
    totp: Annotated[bool, typer.Option(
        "--totp", help="give an approver a second factor too (duty officers and admins "
                       "always get one)")] = False,
) -> None:
    """Create an account, or replace its role, password and second factor."""
    if role not in ("duty_officer", "approver", "translator", "admin"):
        raise fail(f"role: {role!r} is not one of duty_officer, approver, translator, admin")
    settings = env_settings()
    city = city_or_fail(settings)
    try:
        account = new_account(username, role, person, city)  # type: ignore[arg-type]
    except AccountError as exc:
        raise fail(str(exc)) from exc
    secret = new_secret() if totp or account.needs_second_factor else None
    sealed = _sealed(settings, account.username, secret) if secret else None
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
    # An AccountError is a LoaError: with_redis turns it into a clear failure.
    with_redis(lambda r, k, s: save_account(r, k, account, password, by=_operator(),
                                            sealed_totp=sealed))
    out.print(f"account [bold]{account.username}[/] ({account.role}"
              f"{', ' + account.person_id if account.person_id else ''}) saved")
    if not password_stdin:
        out.print(f"password: [bold]{password}[/]  (shown once)")
    if secret:
        _print_secret(account.username, secret)


@accounts_app.command("totp")
def accounts_totp(username: str) -> None:
    """Give an account a new second factor (TOTP); its old codes and sessions end."""
    settings = env_settings()
    secret = new_secret()
    sealed = _sealed(settings, username, secret)
    if not with_redis(lambda r, k, s: enrol_second_factor(r, k, username, sealed, by=_operator())):
        raise fail(f"no account {username!r}")
    out.print(f"account [bold]{username}[/]: new second factor; its sessions ended")
    _print_secret(username, secret)


@accounts_app.command("list")
def accounts_list(as_json: JsonOpt = False) -> None:
    """Every account, and whether it has a second factor."""

    async def listing(redis: Redis, keys: Keys, _: Settings) -> list[tuple[str, ...]]:
        return [(a.username, a.role, a.person_id or "-", a.name, a.created_at.isoformat()[:19],
                 "yes" if await second_factor(redis, keys, a.username) else
                 "at next login" if a.needs_second_factor else "-")
                for a in await list_accounts(redis, keys)]

    columns = ("username", "role", "person", "name", "created", "totp")
    rows = with_redis(listing)
    if as_json:
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@accounts_app.command("remove")
def accounts_remove(username: str) -> None:
    """Remove an account (its sessions end at their next request)."""
    if not with_redis(lambda r, k, s: remove_account(r, k, username, by=_operator())):
        raise fail(f"no account {username!r}")
    out.print(f"account {username} removed")


def _sealed(settings: Settings, username: str, secret: str) -> str:
    try:
        return seal(settings.key_for(KEY_PURPOSE), username, secret)
    except ConfigError as exc:
        raise fail(f"{exc}: it seals the second factor") from exc


def _print_secret(username: str, secret: str) -> None:
    # plain print: rich would wrap the URI and read `[...]` as markup
    print(f"totp secret: {secret}  (shown once: add it to an authenticator app)")
    print(f"totp uri: {enrolment_uri(secret, username)}")


def _operator() -> str:
    """The audit actor of an account change made here: the local operator."""
    return local_operator("loa accounts").actor
