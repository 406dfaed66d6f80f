"""`loa migrate`: the Redis layout's version, the steps pending, and running them."""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.cli.common import JsonOpt, out, print_json, with_redis
from coordinator.keys import Keys
from coordinator.migrations import CURRENT, STEPS
from coordinator.migrations.runner import Migration, migrate
from coordinator.settings import Settings
from coordinator.state import Redis


def migrate_command(
    apply: Annotated[bool, typer.Option(
        "--apply/--dry-run",
        help="make the changes (default: a dry run that shows what would change)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the Redis layout version, the target and the pending steps with what each
    would change; --apply runs them (stop workers and web servers first). Running it again
    changes nothing."""

    async def work(redis: Redis, keys: Keys, settings: Settings) -> Migration:
        return await migrate(redis, keys, apply, STEPS, CURRENT)

    done = with_redis(work, stamp_fresh=False)  # a LayoutError (newer) exits, saying so
    if as_json:
        print_json(done.as_dict())
        return
    for line in describe(done):
        out.print(line, highlight=False, soft_wrap=True)


def describe(done: Migration) -> list[str]:
    """The lines `loa migrate` prints for a run. Pure."""
    lines = [done.found.describe(done.target)]
    if done.found.version is None:
        lines.append(f"stamped version {done.target}" if done.stamped_fresh
                     else "nothing to migrate; `--apply` stamps the version")
        return lines
    if not done.steps:
        return [*lines, "up to date: nothing to do"]
    verb = "done" if done.applied else "would"
    for step in done.steps:
        lines.append(f"{step.name}: {step.summary}")
        lines += [f"  {verb}: {change}" for change in step.changes] or ["  no change needed"]
    lines.append(f"now at version {done.target}" if done.applied
                 else "dry run: nothing changed; run `loa migrate --apply` to migrate")
    return lines
