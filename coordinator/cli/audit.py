"""`loa audit`: check that the audit trail is what was sealed, see its head, prune it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from coordinator.access import Action
from coordinator.audit.chain import Checkpoint
from coordinator.audit.prune import Pruned, prune
from coordinator.audit.sealer import CHECKPOINT_KEY_PURPOSE, stream_items
from coordinator.audit.verify import Verification, verify
from coordinator.cli.common import JsonOpt, err, fail, out, print_json, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis

audit_app = typer.Typer(help="The audit trail and the hash chain that seals it.",
                        no_args_is_help=True)


def _kept(heads: list[str]) -> list[tuple[int, str]]:
    """`SEQ:HASH` values as pairs; exit naming the one that is not."""
    kept = []
    for head in heads:
        seq, _, hash_ = head.partition(":")
        if not seq.isdigit() or len(hash_) != 64:
            raise fail(f"--head {head!r}: expected SEQ:HASH, as /audit/head gives them "
                       "(e.g. 42:3f5c…, 64 hex digits)", 2)
        kept.append((int(seq), hash_))
    return kept


def _n(count: int, one: str, many: str = "") -> str:
    """`1 link`, `2 links`. Pure."""
    return f"{count} {one if count == 1 else many or one + 's'}"


@audit_app.command("verify")
def verify_command(
    head: Annotated[list[str] | None, typer.Option(
        help="a head you kept from /audit/head, SEQ:HASH: the chain must still pass "
             "through it (repeatable)")] = None,
    incident: Annotated[str | None, typer.Option(
        help="check only this incident's own chain (with the global one)")] = None,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Walk the audit chain and name the first entry, link or checkpoint that no longer
    matches what was sealed. Exit 0 when all holds, 1 when something was changed."""
    kept = _kept(head or [])

    async def work(redis: Redis, keys: Keys, s: Settings) -> Verification:
        await cli_principal(redis, keys, s, token, operator_reason, Action.audit_verify)
        return await verify(redis, keys, [s.key_for(CHECKPOINT_KEY_PURPOSE)], kept, incident)

    result = with_redis(work)
    if as_json:
        print_json({**asdict(result), "ok": result.ok})
    elif result.ok:
        out.print(f"audit chain holds: {_n(result.links, 'link')} sealing "
                  f"{_n(result.entries, 'entry', 'entries')} from {result.started_at}, "
                  f"{_n(result.checkpoints, 'signed checkpoint')}, "
                  f"{_n(result.incidents, 'incident chain')}; head {result.head[0]}:"
                  f"{result.head[1]}")
        if result.unsealed:
            out.print(f"{result.unsealed} newer entries are not sealed yet (the worker seals "
                      "them within a second; `loa doctor` says when it does not)")
    else:
        assert result.broken is not None
        err.print(f"[bold red]audit chain broken[/] at {result.broken.line()}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def head_command(
    token: TokenOpt = None, operator_reason: ReasonOpt = "", as_json: JsonOpt = False
) -> None:
    """The chain's newest signed checkpoints (what /audit/head publishes)."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[Checkpoint]:
        await cli_principal(redis, keys, s, token, operator_reason, Action.audit_verify)
        return [Checkpoint.from_fields(f)
                async for _, f in stream_items(redis, keys.audit_checkpoints())]

    checkpoints = with_redis(work)[-20:]
    if as_json:
        print_json([asdict(c) for c in checkpoints])
        return
    if not checkpoints:
        out.print("no checkpoint yet (the worker makes the first within a second of the "
                  "first audited action)")
    for c in checkpoints:
        out.print(f"{c.at}  link {c.seq}  {c.seq}:{c.hash}")


@audit_app.command("prune")
def prune_command(
    through: Annotated[int, typer.Option(help="the link of a checkpoint (`loa audit head`): "
                                              "it and everything before it are dropped")],
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Drop the audit stream and the chain's links up to a signed checkpoint (audited).
    Verification then starts from that checkpoint. Incident timelines are kept."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> Pruned:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.audit_prune)
        return await prune(redis, keys, through, principal.actor, "cli", utcnow())

    done = with_redis(work)
    out.print(f"pruned through link {done.checkpoint.seq} (checkpoint of "
              f"{done.checkpoint.at}): {done.entries_left} audit entries and "
              f"{done.links_left} links left")
