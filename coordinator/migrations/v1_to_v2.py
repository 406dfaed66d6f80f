"""Version 1 -> 2: repair the contact index; subscriber ids stay as they are.

Subscribers created before issue 10 have ids derived from their contact (`sub-` and the
first 16 hex digits of the SHA-1 of the phone, else the lower-case email); newer ones get
random ids. Those old ids are NOT re-keyed: signed unsubscribe links, email confirmation
links and delivery records name subscribers by id, and re-keying would break the links
already in people's inboxes. Both kinds of id fit today's model, so they read as they are.

What does change: before issue 10 a record that lost a phone or email (a web subscription
confirmed on one channel only, an import with another address) left its contact index
entry behind, pointing at it. Today's registry follows that entry: a STOP from that phone
would opt out the record that no longer has it, and a sign-up with it would take that
record over. This step removes every entry whose record is gone or no longer has that
contact, then points every contact a record has, and no entry leads to, at that record
(an active one first, then the lowest id). Re-running finds nothing to do."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from coordinator.dispatch.provider_ids import PROVIDER_IDS_KEPT_S
from coordinator.keys import Keys
from coordinator.migrations import layout2
from coordinator.migrations.step import Step
from coordinator.migrations.version import literal_pattern
from coordinator.state import Pipeline, Redis, transact
from coordinator.subscribers.models import Subscriber


@dataclass(frozen=True)
class ContactFixes:
    """What the contact index needs: entries to remove (contact -> the id they wrongly lead
    to) and entries to add (contact -> the id that has it)."""

    drop: dict[str, str]
    point: dict[str, str]


def contact_index_fixes(index: Mapping[str, str], holders: Mapping[str, Sequence[str]],
                        active: Collection[str], unreadable: Collection[str]) -> ContactFixes:
    """The fixes for a contact index `index` (contact -> id) given each readable record's
    contacts (`holders`: id -> contact keys), the active ids, and ids whose record could not
    be read (entries leading to those are left alone). Pure."""
    drop = {contact: sub_id for contact, sub_id in sorted(index.items())
            if sub_id not in unreadable and contact not in holders.get(sub_id, ())}
    candidates: dict[str, list[str]] = {}
    for sub_id in sorted(holders, key=lambda i: (i not in active, i)):
        for contact in holders[sub_id]:
            candidates.setdefault(contact, []).append(sub_id)
    point = {contact: ids[0] for contact, ids in sorted(candidates.items())
             if contact not in index or contact in drop}
    return ContactFixes(drop, point)


def _what(contact: str) -> str:
    """Whether a contact is a phone or an email: output names no one's contact. Pure."""
    return "phone" if contact.startswith("+") else "email"


async def repair_contact_index(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """Find (and with `apply`, make) the contact index fixes; one line per fix."""
    index_prefix = layout2.by_contact(keys, "")
    entries = redis.scan_iter(match=literal_pattern(index_prefix) + "*", count=1000)
    index = {key.removeprefix(index_prefix): sub_id async for key in entries
             if (sub_id := await redis.get(key))}
    holders: dict[str, list[str]] = {}
    active: set[str] = set()
    unreadable: list[str] = []
    for sub_id in sorted(await redis.smembers(layout2.every(keys))):
        raw = await redis.get(layout2.record(keys, sub_id))
        try:
            sub = Subscriber.model_validate_json(raw) if raw else None
        except ValidationError:
            unreadable.append(sub_id)
            continue
        if sub is not None:
            holders[sub_id] = sub.contact_keys()
            active.update([sub_id] if sub.status == "active" else [])
    fixes = contact_index_fixes(index, holders, active, unreadable)
    done = [f"leave {sub_id} as it is: its record does not read" for sub_id in unreadable]
    for contact, stale_id in fixes.drop.items():
        if not apply or await _drop(redis, keys, contact, stale_id):
            done.append(f"contact index: remove the {_what(contact)} entry leading to "
                        f"{stale_id}, which no longer has that {_what(contact)}")
    for contact, sub_id in fixes.point.items():
        if not apply or await redis.set(layout2.by_contact(keys, contact), sub_id, nx=True):
            done.append(f"contact index: point {sub_id}'s {_what(contact)} at it again")
    return done


async def _drop(redis: Redis, keys: Keys, contact: str, stale_id: str) -> bool:
    """Remove one stale entry if it still leads to `stale_id` and that record still lacks
    the contact (the registry may have moved on meanwhile); True when removed."""
    entry, record = layout2.by_contact(keys, contact), layout2.record(keys, stale_id)

    async def body(pipe: Pipeline) -> bool:
        raw = await pipe.get(record)
        try:
            has_it = bool(raw) and contact in Subscriber.model_validate_json(raw).contact_keys()
        except ValidationError:  # a record that does not read: its entry is left alone
            return False
        if await pipe.get(entry) != stale_id or has_it:
            return False
        pipe.multi()
        pipe.delete(entry)
        return True

    return await transact(redis, [entry, record], body)


async def expire_provider_ids(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """Give the provider-id keys and the early-callback hash written without a lifetime
    their expiry (EXPIRE NX: a key that has one keeps it); one line per kind of key."""
    early = keys.early_callbacks()
    pattern = literal_pattern(keys.provider_message("")) + "*"
    lasting = [key async for key in redis.scan_iter(match=pattern, count=1000)
               if key not in (early, keys.unconfirmed()) and await redis.ttl(key) == -1]
    if apply:
        lasting = [key for key in lasting
                   if await redis.expire(key, PROVIDER_IDS_KEPT_S, nx=True)]
    done = [f"provider ids: {len(lasting)} kept {PROVIDER_IDS_KEPT_S // 86400} days from "
            "now, then expire"] if lasting else []
    if await redis.ttl(early) == -1 and (
            not apply or await redis.expire(early, PROVIDER_IDS_KEPT_S, nx=True)):
        done.append(f"early status callbacks: kept {PROVIDER_IDS_KEPT_S // 86400} days "
                    "from now, then expire")
    return done


async def upgrade(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """The whole step: the contact index, then the lifetimes."""
    return [*await repair_contact_index(redis, keys, apply),
            *await expire_provider_ids(redis, keys, apply)]


STEP = Step(
    source=1,
    summary="repair the contact index (entries left by records that lost a phone or email "
            "before issue 10; subscriber ids are kept) and give provider-id keys a lifetime",
    work=upgrade,
)
