"""Read-side queries shared by the web app and the CLI. They never write."""

from __future__ import annotations

import json
import time
from typing import Any

from coordinator.events import ApprovalPrompt, Draft, Statement
from coordinator.keys import Keys
from coordinator.model.approval import ApprovalRecord
from coordinator.model.trend import trend
from coordinator.state import Redis, read_json_list

MAX_PAGE = 200


def window(cursor: str | None, limit: int) -> tuple[int, int]:
    """(start, stop) of a page: the cursor is the position after the previous page.
    Raises ValueError for a cursor that is not one of ours."""
    start = int(cursor) if cursor else 0
    if start < 0 or not 1 <= limit <= MAX_PAGE:
        raise ValueError("cursor or limit out of range")
    return start, start + limit - 1


def next_cursor(start: int, limit: int, got: int) -> str | None:
    """The cursor of the page after one that started at `start` and got `got` items."""
    return str(start + limit) if got >= limit else None


async def list_incidents(redis: Redis, keys: Keys, limit: int = 100, start: int = 0
                         ) -> list[dict[str, str]]:
    """The newest incidents first (read in one round trip)."""
    ids = await redis.zrevrange(keys.incidents(), start, start + limit - 1)
    async with redis.pipeline(transaction=False) as pipe:
        for incident_id in ids:
            pipe.hgetall(keys.incident(incident_id))
        rows = await pipe.execute()
    return [row for row in rows if row]


async def timeline_page(redis: Redis, keys: Keys, incident_id: str, start: int = 0,
                        limit: int = MAX_PAGE) -> list[dict[str, Any]]:
    """Part of an incident's timeline, oldest first."""
    return [json.loads(item) for item in
            await redis.lrange(keys.timeline(incident_id), start, start + limit - 1)]


async def incident_detail(redis: Redis, keys: Keys, incident_id: str,
                          timeline_limit: int | None = None, trend_window_s: float = 600.0
                          ) -> dict[str, Any] | None:
    """The incident, its timeline (the first `timeline_limit` entries, or all), whether its
    reports are rising or falling, a claim's wordings, the update drafted ahead, its approval
    request and statement; None if unknown."""
    incident: dict[str, Any] = await redis.hgetall(keys.incident(incident_id))
    if not incident:
        return None
    if timeline_limit is None:
        incident["timeline"] = await read_json_list(redis, keys.timeline(incident_id))
    else:
        incident["timeline"] = await timeline_page(redis, keys, incident_id, 0, timeline_limit)
        incident["timeline_next"] = next_cursor(0, timeline_limit, len(incident["timeline"]))
    times = await redis.zrange(keys.report_times(incident_id), 0, -1, withscores=True)
    incident["trend"] = trend([at for _, at in times], time.time(), trend_window_s).to_json()
    if incident.get("claim"):
        incident["claims"] = await redis.hgetall(keys.claim_variants(incident_id))
    prepared = await redis.get(keys.prepared_update(incident_id))
    if prepared:  # the update Loa drafted ahead of a promised one
        incident["prepared_update"] = json.loads(prepared)
    if incident.get("approval_id"):
        incident["approval"] = await approval_detail(redis, keys, incident["approval_id"])
    if incident.get("statement_id"):
        incident["statement"] = await statement_detail(redis, keys, incident["statement_id"])
        incident["dispatch"] = await redis.hgetall(keys.dispatch(incident["statement_id"]))
    return incident


async def approval_detail(redis: Redis, keys: Keys, approval_id: str) -> dict[str, Any] | None:
    """An approval request with its state; None if unknown."""
    row = await redis.hgetall(keys.approval(approval_id))
    if not row:
        return None
    record = ApprovalRecord.from_hash(row)
    request = record.request
    level = record.current_level
    return {
        "id": request.id, "incident_id": request.incident_id, "playbook": request.playbook_id,
        "status": record.status, "phase": record.phase, "level": record.level,
        "levels": len(request.chain), "department": level.department,
        "approvers": record.holders, "eligible": record.eligible,
        "deadline": record.due.isoformat() if record.due and record.phase == "level" else None,
        "next_alert": record.due.isoformat() if record.due and record.phase == "held" else None,
        "decided_by": record.decided_by, "decided_at": record.decided_at,
        "reason": record.reason, "basis": record.basis, "draft_id": request.draft_id,
        "approved_by": record.approved_by,
        "reach": json.loads(row["reach"]) if row.get("reach") else None,
    }


async def list_approvals(redis: Redis, keys: Keys, pending_only: bool = True,
                         limit: int = 200, start: int = 0) -> list[dict[str, Any]]:
    """Approval requests: pending ones by deadline, or all, newest first."""
    if pending_only:
        ids = await redis.zrange(keys.approvals_pending(), start, start + limit - 1)
    else:
        ids = await redis.zrevrange(keys.approvals(), start, start + limit - 1)
    found = [await approval_detail(redis, keys, i) for i in ids]
    return [a for a in found if a is not None]


async def answers_expected(redis: Redis, keys: Keys) -> bool:
    """Whether any approval request awaits an approver (its holders may answer any moment,
    held ones included; not a duty officer's sign-off after an exhausted chain, which
    leaves `approvals:pending`): one O(1) command."""
    return bool(await redis.zcard(keys.approvals_pending()))


async def statement_detail(redis: Redis, keys: Keys, statement_id: str) -> dict[str, Any] | None:
    """A statement as JSON, with `published_at` once it is public; None if unknown."""
    return (await statement_details(redis, keys, [statement_id]))[0]


async def statement_details(redis: Redis, keys: Keys, statement_ids: list[str]
                            ) -> list[dict[str, Any] | None]:
    """Statements as JSON (see `statement_detail`), in order; one round trip for all."""
    async with redis.pipeline(transaction=False) as pipe:
        for statement_id in statement_ids:
            pipe.hgetall(keys.statement(statement_id))
        rows = await pipe.execute() if statement_ids else []
    return [_statement_json(row) if row else None for row in rows]


def _statement_json(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = Statement.model_validate_json(row["statement"]).model_dump(mode="json")
    for field in ("published_at", "withdrawn_at", "withdrawn_reason", "next_update_by"):
        out[field] = row.get(field)
    return out


async def published_statements(redis: Redis, keys: Keys, limit: int = 100, start: int = 0,
                               exercises: bool = False) -> list[dict[str, Any]]:
    """What the public sees: published statements, newest first (drills' statements, kept
    apart, with `exercises`); two round trips however many."""
    index = keys.exercises_published() if exercises else keys.statements_published()
    ids = await redis.zrevrange(index, start, start + limit - 1)
    found = await statement_details(redis, keys, ids)
    return [s for s in found if s is not None and s.get("published_at")]


async def draft_texts(redis: Redis, keys: Keys, draft_id: str) -> list[dict[str, Any]]:
    """The rendered texts of a draft."""
    return list((await draft_of(redis, keys, draft_id)).get("texts", []))


async def draft_of(redis: Redis, keys: Keys, draft_id: str) -> dict[str, Any]:
    """A draft as stored ({} for an unknown one)."""
    raw = await redis.get(keys.draft(draft_id))
    return dict(json.loads(raw)) if raw else {}


async def inbox(redis: Redis, keys: Keys, person_id: str) -> list[dict[str, Any]]:
    """A person's prompts, newest first, each with its request's current status."""
    prompts = [ApprovalPrompt.model_validate_json(raw)
               for raw in (await redis.hgetall(keys.inbox(person_id))).values()]
    out = []
    for prompt in sorted(prompts, key=lambda p: p.at, reverse=True):
        status = await redis.hget(keys.approval(prompt.approval_id), "status")
        out.append({**prompt.model_dump(mode="json"), "status": status})
    return out


def delivery_progress(dispatch: dict[str, str]) -> list[dict[str, Any]]:
    """Per channel: targeted / sent / delivered / failed / skipped, as numbers."""
    rows = []
    for channel in ("sms", "email"):
        if f"targeted:{channel}" not in dispatch:
            continue
        counts = {k: int(dispatch.get(f"{channel}:{k}", 0))
                  for k in ("sent", "delivered", "failed", "skipped")}
        rows.append({"channel": channel, "targeted": int(dispatch[f"targeted:{channel}"]),
                     **counts})
    return rows


async def incident_exists(redis: Redis, keys: Keys, incident_id: str) -> bool:
    """Whether Loa has this incident."""
    return bool(await redis.exists(keys.incident(incident_id)))


async def incident_row(redis: Redis, keys: Keys, incident_id: str) -> dict[str, str]:
    """The incident's stored fields ({} when unknown)."""
    row: dict[str, str] = await redis.hgetall(keys.incident(incident_id))
    return row


async def current_draft_id(redis: Redis, keys: Keys, incident_id: str) -> str | None:
    """The id of the incident's latest draft version, if it has one."""
    found: str | None = await redis.hget(keys.incident(incident_id), "draft_id")
    return found


async def draft_versions(redis: Redis, keys: Keys, draft_ids: list[str]) -> list[Draft]:
    """The drafts of these ids that exist, in the order given (one round trip)."""
    raws = await redis.mget([keys.draft(d) for d in draft_ids]) if draft_ids else []
    return [Draft.model_validate_json(raw) for raw in raws if raw]


async def dispatch_counters(redis: Redis, keys: Keys, statement_id: str) -> dict[str, str]:
    """A statement's fan-out counters (`delivery_progress` reads them)."""
    row: dict[str, str] = await redis.hgetall(keys.dispatch(statement_id))
    return row


async def newest_public_change(redis: Redis, keys: Keys) -> str:
    """The id of the newest change to the public pages (`0-0` before any)."""
    newest = await redis.xrevrange(keys.public_events(), count=1)
    return str(newest[0][0]) if newest else "0-0"


async def public_changes(redis: Redis, keys: Keys, after: str, block_ms: int,
                         count: int = 100) -> list[tuple[str, dict[str, str]]]:
    """Changes to the public pages after the change `after`, oldest first, waiting up to
    `block_ms` for one (pushed by Redis the moment it is written: no polling)."""
    found = await redis.xread({keys.public_events(): after}, count=count, block=block_ms)
    return [(str(i), fields) for _, entries in found for i, fields in entries]


async def short_link_target(redis: Redis, keys: Keys, short_id: str) -> str | None:
    """The signed decision token a short link stands for (None: unknown or expired)."""
    token: str | None = await redis.get(keys.short_link(short_id))
    return token


async def has_opted_out(redis: Redis, keys: Keys, channel: str, contact: str) -> bool:
    """Whether this contact asked for no more messages on this channel (e.g. SMS STOP)."""
    return bool(await redis.sismember(keys.opted_out(channel), contact))


async def audit_checkpoints(redis: Redis, keys: Keys, limit: int) -> list[dict[str, str]]:
    """The audit chain's newest signed checkpoints, newest first, as stored."""
    return [fields for _, fields in
            await redis.xrevrange(keys.audit_checkpoints(), count=limit)]


async def claims_of(redis: Redis, keys: Keys, incident_ids: list[str]
                    ) -> dict[str, dict[str, Any]]:
    """incident id -> its false claim (text, first reported) for those that have one; one
    round trip. The fact and its source are the published correction's own (`Statement`),
    never the incident's, which a duty officer may restate before the next approval."""
    fields = ("claim", "opened_at")
    async with redis.pipeline(transaction=False) as pipe:
        for incident_id in incident_ids:
            pipe.hmget(keys.incident(incident_id), fields)
        rows = await pipe.execute()
    return {i: {"claim": row[0], "first_reported_at": row[1]}
            for i, row in zip(incident_ids, rows, strict=True) if row[0]}


async def spreading_of(redis: Redis, keys: Keys, incident_id: str) -> list[str]:
    """The links where the incident's claim was reported spreading, across its reports, in
    order: what a draft of its correction names, for its approver to see (never published
    unapproved). A screenshot described in words stays with its report, for staff."""
    report_ids = await redis.hkeys(keys.claim_variants(incident_id))
    async with redis.pipeline(transaction=False) as pipe:
        for report_id in report_ids:
            pipe.hget(keys.report(report_id), "report")
        reports = [json.loads(raw) for raw in await pipe.execute() if raw]
    seen: dict[str, None] = {}  # in the order they were reported
    for report in sorted(reports, key=lambda r: (r.get("received_at", ""), r.get("id", ""))):
        for where in report.get("spreading", []):
            if where.startswith(("https://", "http://")):
                seen.setdefault(where, None)
    return list(seen)


async def incident_playbook(redis: Redis, keys: Keys, incident_id: str) -> str | None:
    """The incident's playbook ('' before it has one); None for an unknown incident."""
    found: str | None = await redis.hget(keys.incident(incident_id), "playbook")
    return found


async def published_at(redis: Redis, keys: Keys, statement_id: str) -> str | None:
    """When the statement was published (ISO 8601), or None."""
    found: str | None = await redis.hget(keys.statement(statement_id), "published_at")
    return found
