"""The after-action record's figures, computed from what Redis holds of an incident. Pure.

Inputs are plain values (`Gathered`, read by :mod:`coordinator.after_action.gather`), so the
arithmetic is tested with exact values: the times between steps, how long each approval
level held a request, and each statement's reach per channel and per area, counted from
its delivery records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.incidents.claims import CorrectionClock

HANDED_OVER = frozenset({"sent", "queued", "accepted", "delivered", "undelivered", "failed"})
"""A delivery's statuses once the provider has it (failed: it refused or lost it)."""
FAILED = frozenset({"failed", "undelivered"})


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery record of a statement (`delivery:{statement}:{channel}:{subscriber}`)."""

    channel: str
    status: str
    area: str  # the subscriber's area within the statement's audience, or "other"
    at: datetime | None  # handed over (or skipped)
    updated_at: datetime | None  # the provider's last status


@dataclass(frozen=True)
class StatementFacts:
    """One statement of the incident as stored, with its draft's purpose and delivery rows."""

    statement: dict[str, Any]  # queries.statement_detail
    purpose: str  # the draft's: first, edit, update, correction, all_clear, reselect
    drafted_at: datetime | None
    deliveries: Sequence[DeliveryRow] = ()


@dataclass(frozen=True)
class Gathered:
    """All an after-action record is made of."""

    incident: dict[str, str]
    timeline: Sequence[dict[str, Any]]
    statements: Sequence[StatementFacts] = field(default_factory=tuple)


def _claim(incident: dict[str, str], opened: datetime | None, first: datetime | None,
           goal_s: float) -> dict[str, Any] | None:
    """The claim, the fact and its source, and the clock: first report to correction."""
    if not incident.get("claim") or opened is None:
        return None
    clock = CorrectionClock(opened, goal_s, first)
    return {"claim": incident["claim"], "fact": incident.get("fact", ""),
            "source": incident.get("fact_source", ""),
            "correction": {"goal_s": goal_s, "due_at": clock.due_at.isoformat(),
                           "published_at": first.isoformat() if first else None,
                           "took_s": _seconds(opened, first), "met": clock.met()}}


def _t(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def approval_levels(timeline: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per approval request: how long each level held it, who decided, and how it ended.
    Read from the timeline's approval.* entries, in order."""
    requests: dict[str, dict[str, Any]] = {}
    for entry in timeline:
        action, subject = entry.get("action", ""), entry.get("subject") or ""
        detail, at = entry.get("detail") or {}, _t(entry.get("at"))
        if action == "approval.requested":
            requests[subject] = {"approval": subject, "requested_at": entry["at"], "levels": [
                {"level": detail.get("level", 1), "from": at, "holders": detail.get("holders",
                                                                                    [])}],
                                 "outcome": "pending", "decided_by": None, "decided_at": None}
            continue
        request = requests.get(subject)
        if request is None or request["outcome"] != "pending":
            continue
        if action == "approval.escalated":
            request["levels"].append({"level": detail.get("to_level"), "from": at,
                                      "holders": detail.get("holders", [])})
        elif action in ("approval.approved", "approval.rejected", "approval.exhausted"):
            request["outcome"] = action.removeprefix("approval.")
            request["decided_by"] = entry.get("actor")
            request["decided_at"] = entry["at"]
    out = []
    for request in requests.values():
        ends = [lv["from"] for lv in request["levels"][1:]] + [_t(request["decided_at"])]
        request["levels"] = [{"level": lv["level"], "holders": lv["holders"],
                              "held_s": _seconds(lv["from"], end)}
                             for lv, end in zip(request["levels"], ends, strict=True)]
        out.append(request)
    return out


def reach(rows: Sequence[DeliveryRow]) -> dict[str, Any]:
    """Targeted, handed over, delivered and failed, per channel and per (area, channel)."""
    def counts(selected: list[DeliveryRow]) -> dict[str, int]:
        statuses = Counter(r.status for r in selected)
        return {"targeted": len(selected),
                "sent": sum(n for s, n in statuses.items() if s in HANDED_OVER),
                "delivered": statuses["delivered"],
                "failed": sum(n for s, n in statuses.items() if s in FAILED),
                "skipped": statuses["skipped"]}

    channels = sorted({r.channel for r in rows})
    areas = sorted({r.area for r in rows})
    return {
        "by_channel": {c: counts([r for r in rows if r.channel == c]) for c in channels},
        "by_area": {a: {c: counts([r for r in rows if r.area == a and r.channel == c])
                        for c in channels if any(r.area == a and r.channel == c for r in rows)}
                    for a in areas},
    }


def deliveries_over_time(rows: Sequence[DeliveryRow], since: datetime
                         ) -> dict[str, dict[str, list[float]]]:
    """Per channel, the seconds after `since` at which each delivery was handed over and
    each was confirmed delivered, sorted: what the chart draws."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        series = out.setdefault(row.channel, {"sent": [], "delivered": []})
        if row.status in HANDED_OVER and row.at:
            series["sent"].append((row.at - since).total_seconds())
        confirmed = row.updated_at or row.at
        if row.status == "delivered" and confirmed:
            series["delivered"].append((confirmed - since).total_seconds())
    for series in out.values():
        for values in series.values():
            values.sort()
    return out


def chart_series(g: Gathered) -> dict[str, dict[str, list[float]]]:
    """Every statement's deliveries over time, from the incident's first approval."""
    approved = [a for s in g.statements if (a := _t(s.statement.get("approved_at")))]
    if not approved:
        return {}
    return deliveries_over_time([r for s in g.statements for r in s.deliveries], min(approved))


def figures(g: Gathered, correction_goal_s: float = 3600.0) -> dict[str, Any]:
    """The whole record as JSON-able values (a false claim's with its correction clock)."""
    incident = g.incident
    opened = _t(incident.get("opened_at"))
    published = [s for s in g.statements if s.statement.get("published_at")]
    first = min((t for s in published if (t := _t(s.statement["published_at"]))),
                default=None)
    statements = []
    for s in g.statements:
        st = s.statement
        statements.append({
            "id": st["id"], "msg_type": st.get("msg_type"), "purpose": s.purpose,
            "approved_by": st.get("approved_by", []), "approved_at": st.get("approved_at"),
            "published_at": st.get("published_at"), "withdrawn_at": st.get("withdrawn_at"),
            "withdrawn_reason": st.get("withdrawn_reason"),
            "drafted_to_published_s": _seconds(s.drafted_at, _t(st.get("published_at"))),
            "texts": [{k: t.get(k) for k in ("channel", "language", "title", "body")}
                      for t in st.get("texts", [])],
            "reach": reach(s.deliveries),
        })
    corrections = [{"statement": s["id"], "purpose": s["purpose"],
                    "took_s": s["drafted_to_published_s"]}
                   for s in statements if s["purpose"] in ("correction", "update", "all_clear")]
    return {
        "incident": {k: incident.get(k) for k in (
            "id", "title", "kind", "severity", "area", "status", "opened_at", "closed_at",
            "report_count", "playbook")} | {"exercise": incident.get("exercise") == "1"},
        "times": {"first_report_at": incident.get("opened_at"),
                  "first_statement_at": first.isoformat() if first else None,
                  "first_report_to_first_statement_s": _seconds(opened, first)},
        "claim": _claim(incident, opened, first, correction_goal_s),
        "approvals": approval_levels(g.timeline),
        "statements": statements,
        "corrections": corrections,
        "timeline": [{k: e.get(k) for k in ("at", "action", "actor", "interface", "subject")}
                     for e in g.timeline],
    }
