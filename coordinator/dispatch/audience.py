"""Who a statement is for: subscribers of its area (the areas containing it, and those it
contains), of its kind (or of everything), who are active. Resolved inside Redis."""

from __future__ import annotations

import uuid

from coordinator.city import City
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis
from coordinator.subscribers.models import ALL_TOPICS


def audience_areas(city: City, area: str) -> list[str]:
    """An incident in a ward concerns the subscribers of the city and of every grouping the
    ward is in (its former district); one in a grouping also concerns the subscribers of
    its wards and of the groupings that share one of them. Pure."""
    return city.overlapping(area) or [area]


async def resolve_audience(redis: Redis, keys: Keys, city: City, area: str, kind: str,
                           into: str, exercise: bool = False, drill_list: str | None = None,
                           earlier: str | None = None) -> int:
    """Store the audience as the bitmap `into` over subscriber numbers (no expiry: the
    caller deletes it once read); its size. The caller reads it a stretch at a time, so a
    million subscribers never sit in one Python list. A drill reaches only the active
    members of its test list, or without one, only those of the audience who opted into
    drills. `earlier`: a bitmap of subscribers reached before (an update's), added to the
    audience if still active."""
    async with redis.pipeline(transaction=True) as pipe:
        queue_audience(pipe, keys, city, area, kind, into, exercise, drill_list, earlier)
        pipe.bitcount(into)
        replies = await pipe.execute()
    return int(replies[-1])


def queue_audience(pipe: Pipeline, keys: Keys, city: City, area: str, kind: str, into: str,
                   exercise: bool = False, drill_list: str | None = None,
                   earlier: str | None = None) -> None:
    """Inside MULTI: make `into` the audience, as :func:`resolve_audience` says, for the
    caller to count or combine in the same transaction."""
    active = keys.subs_active()
    if exercise and drill_list:
        pipe.bitop("OR", into, keys.subs_bits("list", drill_list), *(
            [earlier] if earlier else []))
        pipe.bitop("AND", into, into, active)
        return
    kinds = keys.subs_bits("tmp", f"{uuid.uuid4().hex}:kind")
    pipe.bitop("OR", into, *[keys.subs_bits("area", a) for a in audience_areas(city, area)])
    pipe.bitop("OR", kinds, keys.subs_bits("topic", ALL_TOPICS), keys.subs_bits("topic", kind))
    pipe.bitop("AND", into, into, kinds, active,
               *([keys.subs_bits("drills", "yes")] if exercise else []))
    pipe.delete(kinds)
    if earlier:
        pipe.bitop("OR", into, into, earlier)
        pipe.bitop("AND", into, into, active)
