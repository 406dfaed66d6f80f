"""Who a statement is for: subscribers of its area (the areas containing it, and those it
contains), of its kind (or of everything), who are active. Resolved inside Redis."""

from __future__ import annotations

import uuid

from coordinator.city import City
from coordinator.keys import Keys
from coordinator.state import Redis
from coordinator.subscribers.models import ALL_TOPICS


def audience_areas(city: City, area: str) -> list[str]:
    """An incident in a ward concerns the subscribers of the city and of every grouping the
    ward is in (its former district); one in a grouping also concerns the subscribers of
    its wards and of the groupings that share one of them. Pure."""
    return city.overlapping(area) or [area]


async def resolve_audience(redis: Redis, keys: Keys, city: City, area: str, kind: str,
                           into: str, exercise: bool = False, drill_list: str | None = None,
                           earlier: str | None = None) -> int:
    """Store the audience as the set `into` (no expiry: the caller deletes it once read);
    its size. The caller reads it with SSCAN in chunks, so a million subscribers never sit
    in one Python list. A drill reaches only the active members of its test list, or
    without one, only those of the audience who opted into drills. `earlier`: a set of
    subscribers reached before (an update's), added to the audience if still active."""
    if exercise and drill_list:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.sunionstore(into, [keys.subs_index("list", drill_list), *(
                [earlier] if earlier else [])])
            pipe.sinterstore(into, [into, keys.subs_active()])
            return int((await pipe.execute())[1])
    tag = uuid.uuid4().hex
    by_area, everything, this_kind = (keys.subs_index("tmp", f"{tag}:{p}")
                                      for p in ("area", "all", "kind"))
    # Start from the (small) area union and intersect into the big sets: SINTER costs the
    # size of its smallest set, while a union of "all topics" would copy a million members.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sunionstore(by_area, [keys.subs_index("area", a) for a in audience_areas(city, area)])
        pipe.sinterstore(everything, [by_area, keys.subs_index("topic", ALL_TOPICS)])
        pipe.sinterstore(this_kind, [by_area, keys.subs_index("topic", kind)])
        pipe.sunionstore(by_area, [everything, this_kind])
        pipe.sinterstore(into, [by_area, keys.subs_active(),
                                *([keys.subs_index("drills", "yes")] if exercise else [])])
        if earlier:
            pipe.sunionstore(into, [into, earlier])
            pipe.sinterstore(into, [into, keys.subs_active()])
        pipe.delete(by_area, everything, this_kind)
        replies = await pipe.execute()
    return int(replies[-2])  # the last store into `into`
