"""The subscriber registry in Redis, with one set per area, topic, channel and language, so
that an audience is a few set operations on the server.

A subscriber's id is random and says nothing about them; the contact index (phone or email
-> id) is what finds the record of someone who is imported, or joins, again."""

from __future__ import annotations

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, transact
from coordinator.subscribers.models import Subscriber, new_subscriber_id


def index_keys(keys: Keys, sub: Subscriber) -> list[str]:
    """Every index set a subscriber belongs to (the active set only while active)."""
    found = [keys.subs_index("area", a) for a in sub.areas]
    found += [keys.subs_index("topic", t) for t in sub.topics]
    found += [keys.subs_index("channel", c) for c in sub.channels]
    found.append(keys.subs_index("lang", sub.language))
    if sub.drills:
        found.append(keys.subs_index("drills", "yes"))
    found += [keys.subs_index("list", name) for name in sub.lists]
    if sub.status == "active":
        found.append(keys.subs_active())
    return found


class SubscriberConflict(LoaError):
    """A subscriber given with an id whose phone or email belongs to another record."""


async def save_subscriber(redis: Redis, keys: Keys, new: Subscriber,
                          resubscribe: bool = False) -> bool:
    """Insert or update the record `new.id`; True when something changed (saving the same
    record twice is a no-op, so re-importing a file changes nothing). Someone who opted out
    stays out unless `resubscribe` (they said START, or confirmed again). Raises ValueError
    for a subscriber without an id (see :func:`register`)."""
    if not new.id:
        raise ValueError("a new subscriber gets its id from register()")

    async def body(pipe: Pipeline) -> bool:
        _, changed = await _write(pipe, keys, new, resubscribe)
        return changed

    return await transact(redis, [keys.subscriber(new.id)], body)


async def register(redis: Redis, keys: Keys, new: Subscriber, resubscribe: bool = False
                   ) -> tuple[Subscriber, bool]:
    """Save someone found by their contact: the record that already has this phone (else
    this email) is updated; otherwise a record is made, with the id `new` carries (an
    exported file's) or a random one. Returns the record as saved and whether anything
    changed. Raises SubscriberConflict when `new` carries an id and its phone or email is
    another record's."""
    by_contact = [keys.subs_by_contact(c) for c in new.contact_keys()]

    async def body(pipe: Pipeline) -> tuple[Subscriber, bool]:
        owners = [o for o in [await pipe.get(k) for k in by_contact] if o]
        if new.id and any(o != new.id for o in owners):
            other = next(o for o in owners if o != new.id)
            raise SubscriberConflict(f"{new.id}: its phone or email belongs to {other}")
        sub = new.model_copy(update={"id": new.id or (owners[0] if owners
                                                       else new_subscriber_id())})
        await pipe.watch(keys.subscriber(sub.id))
        return await _write(pipe, keys, sub, resubscribe)

    return await transact(redis, by_contact, body)


async def _write(pipe: Pipeline, keys: Keys, new: Subscriber, resubscribe: bool
                 ) -> tuple[Subscriber, bool]:
    """Read the record (WATCHed by the caller), then queue its new state and indexes."""
    key = keys.subscriber(new.id)
    old_raw = await pipe.get(key)
    old = Subscriber.model_validate_json(old_raw) if old_raw else None
    sub = (new.model_copy(update={"status": "opted_out"})
           if old is not None and old.status == "opted_out" and not resubscribe else new)
    keep = sub if old is None else sub.model_copy(update={"consent_at": old.consent_at})
    if old is not None and old.model_dump_json(exclude={"consent_at"}) == sub.model_dump_json(
            exclude={"consent_at"}):
        return keep, False
    # A phone or email this record no longer has must not lead to it any more.
    dropped = [keys.subs_by_contact(c) for c in (old.contact_keys() if old else [])
               if c not in sub.contact_keys()]
    if dropped:
        await pipe.watch(*dropped)
    stale = [k for k in dropped if await pipe.get(k) == sub.id]
    pipe.multi()
    if old is not None:
        for index in index_keys(keys, old):
            pipe.srem(index, sub.id)
    pipe.set(key, keep.model_dump_json())
    for index in index_keys(keys, sub):
        pipe.sadd(index, sub.id)
    for contact in sub.contact_keys():
        pipe.set(keys.subs_by_contact(contact), sub.id)
    if stale:
        pipe.delete(*stale)
    pipe.sadd(keys.subs_all(), sub.id)
    return keep, True


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
