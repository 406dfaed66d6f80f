"""The subscriber registry: saving, finding and opting out, on the layout of
subscribers.store (numbered records, a contact index, index bitmaps).

A subscriber's id says nothing about them (`sub-n<number>`, or the id it came with); the
contact index (phone or email -> number) is what finds the record of someone who is
imported, or joins, again."""

from __future__ import annotations

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, transact
from coordinator.subscribers import store
from coordinator.subscribers.models import Subscriber


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
    number = await _number_for(redis, keys, new.id)
    new = new.model_copy(update={"id": store.id_for(new.id, number)})

    async def body(pipe: Pipeline) -> bool:
        _, changed = await _write(pipe, keys, number, new, resubscribe)
        return changed

    return await transact(redis, [store.record_key(keys, number)], body)


async def register(redis: Redis, keys: Keys, new: Subscriber, resubscribe: bool = False,
                   from_file: bool = False) -> tuple[Subscriber, bool]:
    """Save someone found by their contact: the record that already has this phone (else
    this email) is updated; otherwise a record is made, with the id `new` carries (an
    exported file's) or one of its own. Returns the record as saved and whether anything
    changed. Raises SubscriberConflict when `new` carries an id and its phone or email is
    another record's, or, `from_file`, when the record with that id has neither its phone
    nor its email: ids are numbers, so another installation's file names other people by
    the same ids."""
    by_contact = [store.contact_key(keys, c) for c in new.contact_keys()]
    fresh: list[int] = []  # a number taken for a new record (kept across retries)

    async def body(pipe: Pipeline) -> tuple[Subscriber, bool]:
        owners = [n for c in new.contact_keys()
                  if (n := await store.number_by_contact(pipe, keys, c)) is not None]
        if new.id:
            number = await _number_of_record(pipe, keys, new.id)
            other = next((o for o in owners if o != number), None)
            if other is not None:
                held = await store.read(pipe, keys, other)
                raise SubscriberConflict(
                    f"{new.id}: its phone or email belongs to {held.id if held else other}")
            if from_file and number is not None and not owners:
                # an id another installation gave (ids are numbers): not this person
                raise SubscriberConflict(
                    f"{new.id} is someone else here (another phone and email): import the "
                    "row without its id to make a new record")
            sub_id = new.id
        else:
            number = owners[0] if owners else None
            held = await store.read(pipe, keys, number) if number is not None else None
            sub_id = held.id if held is not None else ""
        if number is None:
            if not fresh:
                fresh.append(await store.new_number(redis, keys, sub_id))
            number = fresh[0]
        sub = new.model_copy(update={"id": store.id_for(sub_id, number)})
        await pipe.watch(store.record_key(keys, number))
        return await _write(pipe, keys, number, sub, resubscribe)

    return await transact(redis, by_contact, body)


async def _number_of_record(redis: Redis | Pipeline, keys: Keys, sub_id: str) -> int | None:
    """The number of the record with this id (None when this Redis has none)."""
    found = await store.record_of(redis, keys, sub_id)
    return found[0] if found is not None else None


async def _number_for(redis: Redis, keys: Keys, sub_id: str) -> int:
    """The number of the record with this id, or a new one for an id this Redis has no
    record of."""
    number = await _number_of_record(redis, keys, sub_id)
    return number if number is not None else await store.new_number(redis, keys, sub_id)


async def _write(pipe: Pipeline, keys: Keys, number: int, new: Subscriber, resubscribe: bool
                 ) -> tuple[Subscriber, bool]:
    """Read the record (its bucket WATCHed by the caller), then queue its new state."""
    old = await store.read(pipe, keys, number)
    sub = (new.model_copy(update={"status": "opted_out"})
           if old is not None and old.status == "opted_out" and not resubscribe else new)
    keep = sub if old is None else sub.model_copy(update={"consent_at": old.consent_at})
    if old is not None and store.encode(old, number) == store.encode(keep, number):
        return keep, False
    # A phone or email this record no longer has must not lead to it any more.
    dropped = [c for c in (old.contact_keys() if old else []) if c not in sub.contact_keys()]
    if dropped:
        await pipe.watch(*{store.contact_key(keys, c) for c in dropped})
    stale = [c for c in dropped if await store.number_by_contact(pipe, keys, c) == number]
    pipe.multi()
    store.queue_write(pipe, keys, number, old, keep, stale)
    return keep, True


async def find_subscriber(redis: Redis, keys: Keys, contact: str) -> Subscriber | None:
    """The subscriber with this phone (E.164) or email, if any."""
    return await store.by_contact(redis, keys, contact.lower())


async def set_status(redis: Redis, keys: Keys, contact: str, status: str) -> Subscriber | None:
    """Opt a subscriber out (or back in) by contact; None when nobody has that contact."""
    sub = await find_subscriber(redis, keys, contact)
    if sub is None:
        return None
    changed = sub.model_copy(update={"status": status})
    await save_subscriber(redis, keys, changed, resubscribe=status == "active")
    return changed
