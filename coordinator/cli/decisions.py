"""`loa inbox`, `loa approve`, `loa reject`: an approver's prompts and decisions, made with
their own credential (or by the local operator acting for them, with the reason)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from coordinator import queries
from coordinator.access import Action, Principal
from coordinator.approvals.decisions import submit_decision
from coordinator.broker import Producer
from coordinator.cli.common import JsonOpt, env_settings, err, fail, out, print_json, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.errors import LoaError
from coordinator.events import Decision
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis


def inbox(
    person: Annotated[str, typer.Option(
        "--for", help="as the local operator: whose prompts (needs --operator-reason)")] = "",
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Your prompts (the token's person): approval requests, reminders, escalations."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[dict[str, Any]]:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.inbox_use)
        return await queries.inbox(redis, keys, _person_of(principal, person))

    rows = with_redis(work)
    if as_json:
        print_json(rows)
        return
    table = Table("when (UTC)", "what", "approval", "level", "now", "message")
    for row in rows:
        table.add_row(row["at"][:19], row["kind"], row["approval_id"], str(row["level"]),
                      row["status"] or "-", row["text"])
    out.print(table)


def _person_of(principal: Principal, named: str) -> str:
    """Whose authority a command uses: the token's person; the local operator names who
    they act for (and said why). LoaError otherwise."""
    if principal.kind == "operator":
        if not named:
            raise LoaError("--for: as the local operator, name the person you act for")
        return named
    if named and named != principal.person_id:
        raise LoaError(f"--for: {principal.actor} acts as itself; --for is for the local "
                       "operator")
    if not principal.person_id:
        raise LoaError(f"{principal.actor} is not bound to a person (make an approver token "
                       "with --person)")
    return principal.person_id


def _decide(approval_id: str, person: str, verdict: str, comment: str, token: str | None,
            operator_reason: str, as_json: bool) -> None:
    settings = env_settings()
    if not settings.kafka_url:
        raise fail("no broker: set LOA_KAFKA_URL or start Loa with `make up`")

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, Any]:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.inbox_use)
        decision = Decision(id=f"dec-{uuid.uuid4().hex[:16]}", approval_id=approval_id,
                            approver_id=_person_of(principal, person),
                            verdict=verdict,  # type: ignore[arg-type]
                            comment=comment, via="cli",
                            acted_by=principal.actor if principal.kind == "operator" else "",
                            acted_because=principal.reason)
        if not await redis.exists(keys.approval(approval_id)):
            raise LoaError(f"no approval {approval_id} (see `loa approvals`)")
        producer = Producer(s)
        await producer.start()
        try:
            await submit_decision(redis, keys, decision, producer.send)
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            raw = await redis.get(keys.decision(decision.id))
            if raw:
                return dict(json.loads(raw))
            await asyncio.sleep(0.2)
        raise LoaError(f"decision {decision.id} was sent but not applied within 30s: "
                       "is a worker running?")

    outcome = with_redis(work)
    if as_json:
        print_json(outcome)
    else:
        (out if outcome["accepted"] else err).print(outcome["message"])
    if not outcome["accepted"]:
        raise typer.Exit(2)


ForOpt = Annotated[str, typer.Option(
    "--for", help="as the local operator: the approver you act for, at their request "
                  "(needs --operator-reason)")]


def approve(
    approval_id: str,
    comment: Annotated[str, typer.Option()] = "",
    person: ForOpt = "",
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft statement with your credential: it is published once applied."""
    _decide(approval_id, person, "approve", comment, token, operator_reason, as_json)


def reject(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="why; the duty officer sees it")],
    person: ForOpt = "",
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject a draft statement: the incident goes back to the duty officer with your reason."""
    _decide(approval_id, person, "reject", reason, token, operator_reason, as_json)
