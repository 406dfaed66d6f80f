"""Read what an after-action record is made of: the incident, its timeline, each statement it
published (or withdrew) with its draft, and every delivery record of those statements with
the area its subscriber was reached in. Read-only; pages through large fan-outs."""

from __future__ import annotations

import json
from datetime import datetime

from coordinator import queries
from coordinator.after_action.figures import DeliveryRow, Gathered, StatementFacts
from coordinator.city import City
from coordinator.dispatch.audience import audience_areas
from coordinator.events import Draft
from coordinator.keys import Keys
from coordinator.state import Redis
from coordinator.subscribers import store

PAGE = 1000


async def gather(redis: Redis, keys: Keys, city: City, incident_id: str) -> Gathered | None:
    """Everything about an incident the record needs; None for an unknown incident."""
    found = await queries.incident_detail(redis, keys, incident_id)
    if found is None:
        return None
    timeline = found.pop("timeline")
    incident = {k: v for k, v in found.items() if isinstance(v, str)}
    ids = json.loads(incident.get("published") or "[]")
    ids += [i for i in _withdrawn(timeline) if i not in ids]
    statements = []
    for statement_id in ids:
        statement = await queries.statement_detail(redis, keys, statement_id)
        if statement is None:
            continue
        raw = await redis.get(keys.draft(statement["draft_id"]))
        draft = Draft.model_validate_json(raw) if raw else None
        rows = await _deliveries(redis, keys, city, statement_id, statement["area"])
        statements.append(StatementFacts(statement, draft.purpose if draft else "first",
                                         draft.rendered_at if draft else None, rows))
    return Gathered(incident, timeline, statements)


def _withdrawn(timeline: list[dict[str, object]]) -> list[str]:
    """Statements withdrawn (they left the incident's published list)."""
    return [str(e["subject"]) for e in timeline if e.get("action") == "statement.withdrawn"]


async def _deliveries(redis: Redis, keys: Keys, city: City, statement_id: str, area: str
                      ) -> list[DeliveryRow]:
    """Every delivery record of a statement, with its subscriber's area."""
    wanted = audience_areas(city, area)
    names = [k async for k in redis.scan_iter(match=keys.delivery(f"{statement_id}:*"),
                                              count=PAGE)]
    out: list[DeliveryRow] = []
    for start in range(0, len(names), PAGE):
        page = names[start:start + PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for name in page:
                pipe.hmget(name, ["channel", "status", "to", "at", "updated_at"])
            rows = await pipe.execute()
        areas_of = await _areas_of(redis, keys, [r[2] or "" for r in rows])
        for channel, status, sub_id, at, updated in rows:
            areas = areas_of.get(sub_id or "", [])
            out.append(DeliveryRow(
                channel or "", status or "", next((a for a in areas if a in wanted), "other"),
                datetime.fromisoformat(at) if at else None,
                datetime.fromisoformat(updated) if updated else None))
    return out


async def _areas_of(redis: Redis, keys: Keys, sub_ids: list[str]) -> dict[str, list[str]]:
    """The areas of each of these subscribers (by id) that still has a record."""
    ids = sorted({i for i in sub_ids if i})
    numbers = {i: n for i, n in zip(ids, await store.numbers_of(redis, keys, ids), strict=True)
               if n is not None}
    found = await store.load(redis, keys, list(numbers.values()))
    return {i: found[n].areas for i, n in numbers.items() if n in found and found[n].id == i}
