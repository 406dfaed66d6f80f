"""The surge detector: windowed counts of reports and tips per kind and area, in Redis.

Each report taken in, and each tip that names a kind and an area, adds one to a counter
per minute for its kind in its area and in every area containing it (`surge` keys, which
expire after the window). After each one, the last window's minutes are summed along that
path, innermost first; the first area at or over the threshold raises a surge, once per
window for that kind in that area (the areas containing it do not raise one for it in
that window; an area inside it still may: it says more). A surge is one entry in the
`surges` stream, one audit entry (on the incident's timeline when a report raised it),
and a message to each duty officer on their preferred channel (the console's board lists
the latest surges).

The counters count what was taken in, in the same transaction (a report's replay adds
nothing); raising a surge is one transaction too, so two workers do not both raise it, and
it keeps the duty officers' messages with it, so none is lost if the broker is down.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.city import City
from coordinator.dispatch.deliveries import Send, keep_deliveries, send_kept_deliveries
from coordinator.dispatch.duty_alerts import duty_officer_alerts
from coordinator.events import AuditEvent, DeliveryRequest
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, queue_audit, transact

MINUTE = 60


@dataclass(frozen=True)
class Surge:
    """`count` reports and tips of `kind` in `area` within the last `window_s`."""

    id: str
    kind: str
    area: str
    count: int
    window_s: float
    at: datetime
    incident_id: str | None = None

    def to_json(self) -> dict[str, object]:
        """As the stream, the API and the board keep it."""
        return {"id": self.id, "kind": self.kind, "area": self.area, "count": self.count,
                "window_s": self.window_s, "at": self.at.isoformat(),
                "incident_id": self.incident_id}


def minutes(at: float, window_s: float) -> list[int]:
    """The minute numbers (epoch minutes) a window ending at `at` covers, newest first."""
    last = int(at // MINUTE)
    return [last - i for i in range(max(1, round(window_s / MINUTE)))]


def first_over(counts: dict[str, int], path: list[str], threshold: int) -> str | None:
    """The innermost area of `path` whose count reaches `threshold`, or None. Pure."""
    return next((area for area in path if counts.get(area, 0) >= threshold), None)


def surge_text(surge: Surge, city: City) -> str:
    """The duty officers' message, in Vietnamese then English."""
    kind = city.kinds.get(surge.kind)
    area = city.areas.get(surge.area)

    def kind_in(language: str) -> str:
        return kind.name.get(language, surge.kind) if kind else surge.kind

    def area_in(language: str) -> str:
        return area.name_in(language) if area else surge.area

    span = round(surge.window_s / MINUTE)
    first, second = city.languages.staff_pair()  # the halves' languages: staff text
    vi = (f"Loa: {surge.count} báo cáo/tin báo «{kind_in(first)}» tại {area_in(first)} "
          f"trong {span} phút")
    en = (f"{surge.count} reports/tips of {kind_in(second)} in {area_in(second)} in {span} "
          "minutes")
    where = f" ({surge.incident_id})" if surge.incident_id else ""
    return f"{vi}{where}. / {en}{where}."


def queue_count(pipe: Pipeline, keys: Keys, kind: str, path: list[str], at: float,
                window_s: float) -> None:
    """Inside MULTI: one more report or tip of `kind` in each area of `path` this minute."""
    minute = minutes(at, window_s)[0]
    for area in path:
        key = keys.surge_count(kind, area, minute)
        pipe.incr(key)
        pipe.expire(key, int(window_s) + 2 * MINUTE)


def surge_alerts(surge: Surge, city: City) -> list[DeliveryRequest]:
    """The duty officers' messages about the surge (ids from the surge's). Pure."""
    return duty_officer_alerts(city, surge.id, surge_text(surge, city), surge.incident_id)


def queue_counts_read(pipe: Pipeline, keys: Keys, kind: str, path: Sequence[str],
                      at: float, window_s: float) -> int:
    """Queue the reads :func:`detect` starts from: each area's counts in the window, then
    which areas raised a surge already (one MGET each, and one); how many were queued."""
    span = minutes(at, window_s)
    for code in path:
        pipe.mget([keys.surge_count(kind, code, m) for m in span])
    pipe.mget([keys.surge_raised(kind, code) for code in path])
    return len(path) + 1


async def detect(redis: Redis, keys: Keys, city: City, kind: str, path: list[str],
                 at: datetime, window_s: float, threshold: int,
                 incident_id: str | None = None, seen: list[Any] | None = None
                 ) -> Surge | None:
    """Raise the surge `path` is in now, if there is one not raised yet in this window,
    keeping the duty officers' messages about it (:func:`tell_duty_officers` sends them).
    `seen`: the replies of :func:`queue_counts_read`, when the report's intake read them
    (in its own transaction, after counting it); else they are read here."""
    span = minutes(at.timestamp(), window_s)
    if seen is None:
        async with redis.pipeline(transaction=False) as pipe:
            queue_counts_read(pipe, keys, kind, path, at.timestamp(), window_s)
            seen = await pipe.execute()
    *found, raised = seen
    counts = {code: sum(int(v or 0) for v in values)
              for code, values in zip(path, found, strict=True)}
    area = first_over(counts, path, threshold)
    if area is None or dict(zip(path, raised, strict=True))[area]:
        # Raised already in this window: each further report of a storm costs no more
        # than these reads (in its intake's transaction; a tip's, one round trip), not a
        # transaction (which checks again before raising).
        return None
    guard = keys.surge_raised(kind, area)
    # the area and those containing it (not a grouping that only shares a ward with it)
    covered = [keys.surge_raised(kind, code) for code in city.ancestors(area) or [area]]
    surge = Surge(id=f"SRG-{kind}-{area}-{span[0]}", kind=kind, area=area, count=counts[area],
                  window_s=window_s, at=at, incident_id=incident_id)

    async def body(tx: Pipeline) -> Surge | None:
        if await tx.get(guard):
            tx.multi()
            return None
        tx.multi()
        for key in covered:  # and the areas containing it: they do not alert again for it
            tx.set(key, surge.id, ex=int(window_s))
        tx.xadd(keys.surges(), {"surge": json.dumps(surge.to_json())}, maxlen=1000,
                approximate=True)
        queue_audit(tx, keys, AuditEvent(
            at=at, actor="surge detector", action="surge.detected", interface="system",
            incident_id=incident_id, subject=surge.id, detail=surge.to_json()))
        keep_deliveries(tx, keys, surge_alerts(surge, city))
        return surge

    result: Surge | None = await transact(redis, [guard], body)
    return result


async def tell_duty_officers(city: City, surge: Surge, send: Send) -> int:
    """Send the messages :func:`detect` kept about the surge; how many the broker took (the
    worker's recovery sends the rest)."""
    return await send_kept_deliveries(surge_alerts(surge, city), send)


async def recent_surges(redis: Redis, keys: Keys, start: int = 0, limit: int = 20
                        ) -> list[dict[str, object]]:
    """The surges raised lately, newest first (the stream keeps about 1,000)."""
    entries = await redis.xrevrange(keys.surges(), count=start + limit)
    return [json.loads(fields["surge"]) for _, fields in entries[start:]]
