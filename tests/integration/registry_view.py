"""What the registry holds, read with a synchronous client the way subscribers.store lays
it out: for tests that look at Redis itself rather than through a command."""

from __future__ import annotations

from typing import Any

from coordinator.keys import Keys
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import (
    RECORD_BUCKET,
    canonical_number,
    contact_key,
    decode,
    record_key,
)


def number_of(r: Any, keys: Keys, sub_id: str) -> int | None:
    """The number an id has."""
    found = r.hget(keys.subs_ids(), sub_id)
    return int(found) if found else canonical_number(sub_id)


def record(r: Any, keys: Keys, sub_id: str) -> Subscriber | None:
    """The record with this id, if any."""
    number = number_of(r, keys, sub_id)
    raw = r.hget(record_key(keys, number), str(number)) if number is not None else None
    sub = decode(number, raw) if raw and number is not None else None
    return sub if sub is not None and sub.id == sub_id else None


def id_by_contact(r: Any, keys: Keys, contact: str) -> str | None:
    """The id of the subscriber the contact index leads this phone or email to."""
    number = r.hget(contact_key(keys, contact), contact)
    raw = r.hget(record_key(keys, int(number)), number) if number else None
    return decode(int(number), raw).id if raw and number else None


def everyone(r: Any, keys: Keys) -> list[Subscriber]:
    """Every record, in number order."""
    last = int(r.get(keys.subs_next()) or 0)
    out = []
    for bucket in range(last // RECORD_BUCKET + 1):
        rows = r.hgetall(keys.subs_records(bucket))
        out += [decode(int(n), rows[n]) for n in sorted(rows, key=int)]
    return out


def is_active(r: Any, keys: Keys, sub_id: str) -> bool:
    """Whether the subscriber's bit is set in the active bitmap."""
    number = number_of(r, keys, sub_id)
    return number is not None and bool(r.getbit(keys.subs_active(), number))
