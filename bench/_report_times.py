"""What Loa's own records in Redis say of a report's trip (when it was received, when its
incident's approval request was made, when the first prompt was handed to its channel),
and the quantiles the benchmarks print of such waits."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from typing import Any

from _measure import SyncRedis  # bench/ is the script's folder

from coordinator.keys import Keys


def quantiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max, in ms, of values in seconds (nan for none)."""
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [
        ordered[0]] * 99
    return {"p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def planned(r: SyncRedis, keys: Keys, report_ids: list[str]) -> dict[str, dict[str, Any]]:
    """For each report taken in: its incident, received_at, and the incident's approval
    request's created_at (when it has one yet)."""
    pipe = r.pipeline(transaction=False)
    for rid in report_ids:
        pipe.hgetall(keys.report(rid))
    rows = pipe.execute()
    incidents = {row["incident"] for row in rows if row}
    pipe = r.pipeline(transaction=False)
    for incident in sorted(incidents):
        pipe.hget(keys.incident(incident), "approval_id")
    approval_of = dict(zip(sorted(incidents), pipe.execute(), strict=True))
    pipe = r.pipeline(transaction=False)
    for incident in sorted(incidents):
        pipe.hget(keys.approval(approval_of[incident] or "-"), "request")
    created = {}
    for incident, raw in zip(sorted(incidents), pipe.execute(), strict=True):
        if raw:
            created[incident] = epoch(json.loads(raw)["created_at"])
    out = {}
    for rid, row in zip(report_ids, rows, strict=True):
        if not row:
            continue
        report = json.loads(row["report"])
        out[rid] = {"incident": row["incident"], "opened": row["opened"] == "1",
                    "received_at": epoch(report["received_at"]), "kind": report["kind"],
                    "area": report["area"], "requested_at": created.get(row["incident"])}
    return out


def first_prompts(r: SyncRedis, keys: Keys, incidents: list[str]) -> dict[str, float]:
    """When each incident's first approval prompt was handed to its channel (its first
    `delivery.*` entry in the timeline)."""
    pipe = r.pipeline(transaction=False)
    for incident in incidents:
        pipe.lrange(keys.timeline(incident), 0, -1)
    out = {}
    for incident, entries in zip(incidents, pipe.execute(), strict=True):
        for raw in entries:
            entry = json.loads(raw)
            if (entry["action"].startswith("delivery.")
                    and (entry.get("detail") or {}).get("purpose") == "prompt"):
                out[incident] = epoch(entry["at"])
                break
    return out
