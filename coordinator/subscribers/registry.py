"""The subscriber registry in Redis, with one set per area, topic, channel and language, so
that an audience is a few set operations on the server."""

from __future__ import annotations

from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, transact
from coordinator.subscribers.models import Subscriber


def index_keys(keys: Keys, sub: Subscriber) -> list[str]:
    """Every index set a subscriber belongs to (the active set only while active)."""
    found = [keys.subs_index("area", a) for a in sub.areas]
    found += [keys.subs_index("topic", t) for t in sub.topics]
    found += [keys.subs_index("channel", c) for c in sub.channels]
    found.append(keys.subs_index("lang", sub.language))
    if sub.status == "active":
        found.append(keys.subs_active())
    return found


async def save_subscriber(redis: Redis, keys: Keys, new: Subscriber,
                          resubscribe: bool = False) -> bool:
    """Insert or update; True when something changed (saving the same record twice is a
    no-op, so re-importing a file changes nothing). Someone who opted out stays out unless
    `resubscribe` (they said START, or confirmed again)."""
    key = keys.subscriber(new.id)

    async def body(pipe: Pipeline) -> bool:
        old_raw = await pipe.get(key)
        old = Subscriber.model_validate_json(old_raw) if old_raw else None
        sub = (new.model_copy(update={"status": "opted_out"})
               if old is not None and old.status == "opted_out" and not resubscribe else new)
        new_raw = sub.model_dump_json(exclude={"consent_at"})
        if old is not None and old.model_dump_json(exclude={"consent_at"}) == new_raw:
            return False
        pipe.multi()
        if old is not None:
            for index in index_keys(keys, old):
                pipe.srem(index, sub.id)
        keep = sub if old is None else sub.model_copy(update={"consent_at": old.consent_at})
        pipe.set(key, keep.model_dump_json())
        for index in index_keys(keys, sub):
            pipe.sadd(index, sub.id)
        if sub.phone:
            pipe.set(keys.subs_by_contact(sub.phone), sub.id)
        if sub.email:
            pipe.set(keys.subs_by_contact(sub.email.lower()), sub.id)
        pipe.sadd(keys.subs_all(), sub.id)
        return True

    return await transact(redis, [key], body)


async def find_subscriber(redis: Redis, keys: Keys, contact: str) -> Subscriber | None:
    """The subscriber with this phone (E.164) or email, if any."""
    sub_id = await redis.get(keys.subs_by_contact(contact.lower()))
    raw = await redis.get(keys.subscriber(sub_id)) if sub_id else None
    return Subscriber.model_validate_json(raw) if raw else None


async def set_status(redis: Redis, keys: Keys, contact: str, status: str) -> Subscriber | None:
    """Opt a subscriber out (or back in) by contact; None when nobody has that contact."""
    sub = await find_subscriber(redis, keys, contact)
    if sub is None:
        return None
    changed = sub.model_copy(update={"status": status})
    await save_subscriber(redis, keys, changed, resubscribe=status == "active")
    return changed
