"""What the console shows of incidents, read from Redis (never written)."""

from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any

from coordinator import queries
from coordinator.events import Draft, Severity, utcnow
from coordinator.incidents.claims import CorrectionClock
from coordinator.model.incident import draft_version, ids_for
from coordinator.queries import delivery_progress
from coordinator.web.state import State


def holder_names(st: State, approval: dict[str, Any] | None) -> str:
    """The names of whoever holds the approval now."""
    if not approval or approval["status"] != "pending":
        return ""
    people = st.city.people
    return ", ".join(people[p].name if p in people else p for p in approval["approvers"])


async def board_rows(st: State, include_closed: bool = False) -> list[dict[str, Any]]:
    """Incidents for the board, most severe first, then newest."""
    rows: list[dict[str, Any]] = []
    for incident in await queries.list_incidents(st.redis, st.keys, limit=300):
        if incident.get("status") == "closed" and not include_closed:
            continue
        approval = (await queries.approval_detail(st.redis, st.keys, incident["approval_id"])
                    if incident.get("approval_id") else None)
        dispatch = (await queries.dispatch_counters(st.redis, st.keys, incident["statement_id"])
                    if incident.get("statement_id") else {})
        rows.append({"incident": incident, "approval": approval,
                     "holders": holder_names(st, approval), "progress": delivery_progress(dispatch),
                     "area_name": _area_name(st, incident["area"]),
                     "clock": await correction_clock(st, incident)})
    rows.sort(key=lambda r: r["incident"]["opened_at"], reverse=True)
    rows.sort(key=lambda r: Severity(r["incident"]["severity"]).rank, reverse=True)
    return rows


async def correction_clock(st: State, incident: dict[str, Any]) -> dict[str, Any] | None:
    """A false claim's clock: due by, or how long its correction took (None otherwise)."""
    if not incident.get("claim"):
        return None
    published = json.loads(incident.get("published") or "[]")
    at = await queries.published_at(st.redis, st.keys, published[0]) if published else None
    clock = CorrectionClock(datetime.fromisoformat(incident["opened_at"]),
                            st.settings.correction_goal_s,
                            datetime.fromisoformat(at) if at else None)
    return clock.to_json(utcnow()) | {"goal_min": round(clock.goal_s / 60)}


def _area_name(st: State, code: str) -> str:
    return st.city.area_name(code, st.city.languages.staff[0])


async def drafts_of(st: State, incident_id: str, current_id: str) -> list[Draft]:
    """Every draft version of an incident, oldest first."""
    ids = [ids_for(incident_id, v)[0] for v in range(1, draft_version(current_id) + 1)]
    return await queries.draft_versions(st.redis, st.keys, ids)


def text_diff(before: Draft, after: Draft) -> list[str]:
    """Unified diff of two versions' texts, channel by channel and language by language."""
    def lines(draft: Draft) -> list[str]:
        out = []
        for t in draft.texts:
            out.append(f"## {t.channel}/{t.language}")
            if t.title:
                out.append(t.title)
            out.extend(t.body.splitlines())
        return out
    return list(difflib.unified_diff(lines(before), lines(after), f"v{before.version}",
                                     f"v{after.version}", lineterm="", n=1))


async def incident_view(st: State, incident_id: str) -> dict[str, Any] | None:
    """Everything the incident page shows; None for an unknown incident."""
    found = await queries.incident_detail(st.redis, st.keys, incident_id,
                                          trend_window_s=st.settings.trend_window_s)
    if found is None:
        return None
    drafts = await drafts_of(st, incident_id, found.get("draft_id", ""))
    versions = [{"draft": d, "diff": text_diff(drafts[i - 1], d) if i else []}
                for i, d in enumerate(drafts)]
    reports = [e for e in found["timeline"]
               if e["action"] in ("incident.opened", "incident.report_attached")]
    return {"incident": found, "approval": found.get("approval"),
            "holders": holder_names(st, found.get("approval")),
            "progress": delivery_progress(found.get("dispatch") or {}),
            "versions": versions, "current": drafts[-1] if drafts else None,
            "reports": reports, "area_name": _area_name(st, found["area"]),
            "published": json.loads(found.get("published") or "[]"),
            "clock": await correction_clock(st, found)}
