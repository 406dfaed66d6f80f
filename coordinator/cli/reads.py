"""`loa incidents`, `loa show`, `loa approvals`, `loa statements`: what a duty officer
reads. Incidents and approval requests take a staff credential, as their API routes do
(`incident.read`, `approval.read`); published statements are public."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from coordinator import queries
from coordinator.access import Action
from coordinator.cli.common import JsonOpt, fail, out, print_json, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis


def incidents(token: TokenOpt = None, operator_reason: ReasonOpt = "",
              as_json: JsonOpt = False) -> None:
    """List incidents, newest first."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[dict[str, Any]]:
        await cli_principal(redis, keys, s, token, operator_reason, Action.incident_read)
        return await queries.list_incidents(redis, keys)

    rows = with_redis(work)
    if as_json:
        print_json(rows)
        return
    table = Table("incident", "status", "severity", "kind", "area", "playbook", "reports", "title")
    for row in rows:
        drill = "[DIỄN TẬP / EXERCISE] " if row.get("exercise") == "1" else ""
        table.add_row(row["id"], row["status"], row["severity"], row["kind"], row["area"],
                      row["playbook"] or "-", row["report_count"], drill + row["title"])
    out.print(table)


def show(incident_id: str, token: TokenOpt = None, operator_reason: ReasonOpt = "",
         as_json: JsonOpt = False) -> None:
    """An incident and its timeline: reports, playbook and why, draft, approval, statement."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, Any] | None:
        await cli_principal(redis, keys, s, token, operator_reason, Action.incident_read)
        return await queries.incident_detail(redis, keys, incident_id,
                                             trend_window_s=s.trend_window_s)

    found = with_redis(work)
    if found is None:
        raise fail(f"no incident {incident_id} (see `loa incidents`)")
    if as_json:
        print_json(found)
        return
    drill = ("  [bold magenta]DIỄN TẬP / EXERCISE[/]" + (
        f" (test list {found['drill_list']})" if found.get("drill_list") else "")
             if found.get("exercise") == "1" else "")
    out.print(f"[bold]{found['id']}[/] {escape(found['title'])}  "
              f"{escape('[' + found['status'] + ']')}{drill}")
    trend = found["trend"]
    out.print(f"{found['kind']} · {found['severity']} · {found['area']} · "
              f"{found['report_count']} report(s), {trend['direction']} ({trend['recent']} in "
              f"the last {trend['window_s'] / 60:g} min, {trend['before']} before) · "
              f"playbook {found['playbook'] or '-'}")
    if found.get("claim"):
        out.print(f"claim: {escape(found['claim'])}"
                  + (f"  ({len(found['claims'])} wordings)" if len(found["claims"]) > 1 else ""))
    if found.get("merged_into"):
        out.print(f"merged into {found['merged_into']}")
    if found.get("status_reason"):
        out.print(f"[yellow]{found['status_reason']}[/]")
    if found.get("next_update_by"):
        prepared = found.get("prepared_update")
        out.print(f"next update promised by {found['next_update_by']}" + (
            f"; Loa drafted it ({escape(prepared['covers'] or 'from the playbook')}): send "
            "it for approval from the console's incident page" if prepared else ""))
    for p in queries.delivery_progress(found.get("dispatch") or {}):
        out.print(f"{p['channel']}: targeted {p['targeted']}, sent {p['sent']}, "
                  f"delivered {p['delivered']}, failed {p['failed']}, skipped {p['skipped']}")
    table = Table("when (UTC)", "what", "who", "via", "detail")
    for entry in found["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in entry["detail"].items())
        table.add_row(entry["at"][:19], entry["action"], entry["actor"], entry["interface"],
                      f"{entry.get('subject') or ''} {detail}".strip())
    out.print(table)


def approvals(
    all_: Annotated[bool, typer.Option("--all", help="also decided ones")] = False,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Approval requests waiting for a decision (by deadline)."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[dict[str, Any]]:
        await cli_principal(redis, keys, s, token, operator_reason, Action.approval_read)
        return await queries.list_approvals(redis, keys, pending_only=not all_)

    rows = with_redis(work)
    if as_json:
        print_json(rows)
        return
    table = Table("approval", "incident", "status", "level", "who holds it", "deadline (UTC)",
                  "time left", "reach (SMS / segments / email)")
    for row in rows:
        reach = row.get("reach") or {}
        table.add_row(row["id"], row["incident_id"], _status(row),
                      f"{row['level']}/{row['levels']}",
                      f"{row['department']}: {', '.join(row['approvers'])}",
                      (row["deadline"] or "")[:19], _time_left(row["deadline"]),
                      f"{reach['sms']} / {reach['sms_segments']} / {reach['email']}"
                      if reach else "-")
    out.print(table)


def _status(row: dict[str, Any]) -> str:
    if row["status"] != "pending":
        return str(row["status"])
    return {"level": "pending", "held": "held (chain exhausted)",
            "duty_officer": "duty officer may sign off"}[row["phase"]]


def _time_left(deadline: str | None) -> str:
    from datetime import datetime

    if not deadline:
        return "-"
    left = datetime.fromisoformat(deadline).timestamp() - time.time()
    return f"{int(left // 60)}m{int(left % 60):02d}s" if left > 0 else "overdue"


def statements(as_json: JsonOpt = False) -> None:
    """Published statements, newest first."""
    rows = with_redis(lambda r, k, s: queries.published_statements(r, k))
    if as_json:
        print_json(rows)
        return
    table = Table("statement", "incident", "severity", "area", "published (UTC)", "approved by",
                  "title")
    for row in rows:
        title = next((t["title"] for t in row["texts"] if t["channel"] == "web"), "")
        table.add_row(row["id"], row["incident_id"], row["severity"], row["area"],
                      (row["published_at"] or "")[:19], ", ".join(row["approved_by"]), title)
    out.print(table)
