"""`loa subscribers ...` and `loa dispatch-watch`: the people who receive statements.

Every `loa subscribers` command handles contacts, so it acts with a credential allowed
`subscriber.admin` (an admin's token, or the local operator saying why), and each leaves
an audit entry naming its caller (subscriber ids and counts, never the contacts)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from coordinator.access import Action, Principal
from coordinator.cli.common import city_or_fail, err, fail, out, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, audit_cli_action, cli_principal
from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.settings import Settings, load_settings
from coordinator.state import Redis

subscribers_app = typer.Typer(help="The people who receive statements.", no_args_is_help=True)


@subscribers_app.command("add")
def subscribers_add(
    area: Annotated[list[str], typer.Option(help="area code; repeat for more")],
    channel: Annotated[list[str], typer.Option(help="sms or email; repeat for both")],
    phone: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str | None, typer.Option(
        help="a language of config/languages.yaml; none = the city's default")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="incident kind; none = all")] = None,
    role: Annotated[str, typer.Option(help="resident, press or partner")] = "resident",
    drills: Annotated[bool, typer.Option(help="also receive drills' messages (marked as "
                                              "exercises)")] = False,
    test_list: Annotated[list[str] | None, typer.Option(
        "--list", help="a test list an exercise can target by name; repeat for more")] = None,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Add (or update) one subscriber."""
    from pydantic import ValidationError

    from coordinator.subscribers.models import Subscriber
    from coordinator.subscribers.registry import register

    city = city_or_fail(load_settings())
    unknown = [a for a in area if a not in city.areas]
    if unknown:
        raise fail(f"--area: {city.unknown_area(unknown[0])}")
    language = city.languages.find(language or city.languages.default) or language or ""
    if not city.languages.known(language):
        raise fail(f"--language: {language!r} is not one of the city's languages "
                   f"({', '.join(city.languages.tags)}; see config/languages.yaml)")
    try:
        sub = Subscriber.model_validate({
            "phone": phone, "email": email, "language": language, "areas": area,
            "topics": topic or ["*"], "channels": channel, "role": role,
            "drills": drills, "lists": test_list or [], "consent_source": "cli"})
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'subscriber'}: "
                             f"{e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())) from exc

    async def work(redis: Redis, keys: Keys, s: Settings) -> tuple[Subscriber, bool]:
        caller = await _caller(redis, keys, s, token, operator_reason)
        saved, changed = await register(redis, keys, sub)
        await audit_cli_action(redis, keys, caller, "subscriber.saved", saved.id,
                               changed=changed)
        return saved, changed

    saved, changed = with_redis(work)
    out.print(f"{saved.id} {'saved' if changed else 'unchanged'}")


@subscribers_app.command("import")
def subscribers_import(path: Path, token: TokenOpt = None, operator_reason: ReasonOpt = ""
                       ) -> None:
    """Import a CSV file; every rejected row is listed with its line; re-importing the same
    file changes nothing. Someone already registered (same phone, else same email) is
    updated, not added again."""
    from rich.progress import track

    from coordinator.subscribers.csvio import parse_csv
    from coordinator.subscribers.registry import SubscriberConflict, register

    city = city_or_fail(load_settings())
    try:
        rows = list(parse_csv(path.read_text(encoding="utf-8"), city, source=f"import:{path.name}"))
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: cannot read: {exc}") from exc

    conflicts: list[tuple[int, str]] = []
    renamed: list[tuple[int, str]] = []  # saved under another id than the file's

    async def work(redis: Redis, keys: Keys, s: Settings) -> tuple[int, int]:
        caller = await _caller(redis, keys, s, token, operator_reason)
        saved = unchanged = 0
        try:
            for line, sub, _ in track(rows, description="importing", console=err):
                if sub is None:
                    continue
                try:
                    kept, changed = await register(redis, keys, sub, from_file=True)
                except SubscriberConflict as exc:
                    conflicts.append((line, f"id: {exc}"))
                    continue
                if sub.id and kept.id != sub.id:
                    renamed.append((line, f"id: {sub.id} is saved as {kept.id} ({sub.id}'s "
                                          "number was handed out here before)"))
                saved += changed
                unchanged += not changed
        finally:  # an import cut off half way says what it did save
            await audit_cli_action(
                redis, keys, caller, "subscribers.imported", path.name, saved=saved,
                unchanged=unchanged,
                rejected=sum(sub is None for _, sub, _ in rows) + len(conflicts))
        return saved, unchanged

    saved, unchanged = with_redis(work)
    rejected = sorted([(line, why) for line, sub, why in rows if sub is None] + conflicts)
    for line, why in sorted(rejected + renamed):
        err.print(f"{path}:{line}: {why}", markup=False, highlight=False, soft_wrap=True)
    new_ids = f" ({len(renamed)} under a new id)" if renamed else ""
    out.print(f"{saved} saved{new_ids}, {unchanged} unchanged, {len(rejected)} rejected")
    if rejected:
        raise typer.Exit(1)


@subscribers_app.command("export")
def subscribers_export(token: TokenOpt = None, operator_reason: ReasonOpt = "") -> None:
    """Print every subscriber as CSV (the import format)."""
    from coordinator.subscribers import store
    from coordinator.subscribers.csvio import to_csv
    from coordinator.subscribers.models import Subscriber

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[Subscriber]:
        caller = await _caller(redis, keys, s, token, operator_reason)
        every = [sub async for _, sub in store.every(redis, keys)]
        await audit_cli_action(redis, keys, caller, "subscribers.exported", None,
                               count=len(every))
        return every

    typer.echo(to_csv(with_redis(work)), nl=False)


@subscribers_app.command("remove")
def subscribers_remove(contact: str, token: TokenOpt = None, operator_reason: ReasonOpt = ""
                       ) -> None:
    """Opt a subscriber out by phone or email: nothing more is sent to them."""
    from channels.contacts import InvalidContact, e164
    from coordinator.subscribers.models import Subscriber
    from coordinator.subscribers.registry import set_status

    try:
        key = contact if "@" in contact else e164(contact, load_settings().phone_region)
    except InvalidContact as exc:
        raise fail(str(exc)) from exc

    async def work(redis: Redis, keys: Keys, s: Settings) -> Subscriber | None:
        caller = await _caller(redis, keys, s, token, operator_reason)
        found = await set_status(redis, keys, key, "opted_out")
        if found is not None:
            await audit_cli_action(redis, keys, caller, "subscriber.opted_out", found.id)
        return found

    found = with_redis(work)
    if found is None:
        raise fail(f"no subscriber with {contact}")
    out.print(f"{found.id} opted out")


async def _caller(redis: Redis, keys: Keys, settings: Settings, token: str | None,
                  operator_reason: str) -> Principal:
    """Who runs this command, if they may handle contacts (else a LoaError saying why)."""
    return await cli_principal(redis, keys, settings, token, operator_reason,
                               Action.subscriber_admin)


def dispatch_watch(
    statement_id: str,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600.0,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Watch a statement's fan-out: a progress bar per channel until every delivery is done."""
    from rich.progress import Progress

    async def watch(redis: Redis, keys: Keys, s: Settings) -> dict[str, str]:
        await cli_principal(redis, keys, s, token, operator_reason, Action.incident_read)
        deadline = time.monotonic() + timeout
        with Progress(console=out) as progress:
            bars: dict[str, Any] = {}
            while time.monotonic() < deadline:
                d = await redis.hgetall(keys.dispatch(statement_id))
                # The ledger's word: every batch done, so every delivery final.
                finished = bool(d.get("finished_at"))
                for channel in ("sms", "email"):
                    total = int(d.get(f"targeted:{channel}", 0))
                    if not total:
                        continue
                    done = sum(int(d.get(f"{channel}:{k}", 0))
                               for k in ("sent", "failed", "skipped"))
                    if channel not in bars:
                        bars[channel] = progress.add_task(channel, total=total)
                    progress.update(bars[channel], completed=min(done, total), total=total)
                if finished:
                    return dict(d)
                await asyncio.sleep(0.5)
        raise LoaError(f"{statement_id}: fan-out not finished after {timeout:.0f}s")

    try:
        counts = with_redis(watch)
    except LoaError as exc:
        raise fail(str(exc)) from exc
    out.print(", ".join(f"{k}={v}" for k, v in sorted(counts.items())
                        if k.partition(":")[0] in ("targeted", "sms", "email")))


