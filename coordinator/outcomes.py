"""Waiting for the worker: what it stored for an event the web or SMS side sent (a
decision, a duty officer's action), and which incident took in a filed report.

The web and the SMS hook send an event to the broker and wait briefly for its outcome,
so that the person who acted is told what happened; after the wait they say it was
received. Reads only.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from coordinator.keys import Keys
from coordinator.state import Redis

POLL_S = 0.1


async def outcome_of(redis: Redis, keys: Keys, event_id: str, timeout_s: float = 10
                     ) -> dict[str, Any] | None:
    """What the worker stored for the event `event_id` (`accepted`, `message`), once it
    has; None when it did not within `timeout_s` (read at least once, so 0 just looks)."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = await redis.get(keys.decision(event_id))
        if raw:
            outcome: dict[str, Any] = json.loads(raw)
            return outcome
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_S)


async def incident_of_report(redis: Redis, keys: Keys, report_id: str, timeout_s: float = 10
                             ) -> str | None:
    """The incident that took in the report `report_id`, once one has; None when none did
    within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        incident_id: str | None = await redis.hget(keys.report(report_id), "incident")
        if incident_id is not None:
            return incident_id
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_S)


async def report_filed(redis: Redis, keys: Keys, report_id: str) -> bool:
    """Whether a report of this id was filed: kept in the outbox, or taken in (the intake
    removes the one and writes the other in one transaction, so one of the two is there)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hexists(keys.outbox(), report_id)
        pipe.exists(keys.report(report_id))
        kept, taken = await pipe.execute()
    return bool(kept or taken)
