"""How the registry lays subscribers out in Redis (layout 3), compact enough for a city of
ten million (docs/architecture.md, "Subscribers at city scale"):

- every subscriber has a number (``Keys.subs_next``); its id is ``sub-n<number>`` unless
  it came with another (an older random one, an imported file's), which ``Keys.subs_ids``
  maps to its number;
- its record is a short JSON array (:func:`encode`) in a hash of :data:`RECORD_BUCKET`
  numbers, so ten million records are twenty thousand keys, not ten million;
- the contact index (phone or email -> number) is a hash per bucket of contacts;
- each index (area, topic, channel, language, drills, test list, active) is a bitmap over
  the numbers, so an audience is a few BITOPs inside Redis (dispatch.audience).

Hashes stay compact (listpack) while they hold at most ``hash-max-listpack-entries`` fields
of at most ``hash-max-listpack-value`` bytes: the embedded Redis is started with room for a
bucket (coordinator.embedded); another Redis works either way, only bigger."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, Script
from coordinator.subscribers.models import ALL_TOPICS, Subscriber

RECORD_BUCKET = 512
CONTACT_BUCKETS = 65536
_CANONICAL = re.compile(r"^sub-n([1-9][0-9]{0,17})$")
_STATUS = {"active": "a", "pending": "p", "opted_out": "o"}
_STATUS_OF = {v: k for k, v in _STATUS.items()}
_FIELDS = 13  # of a record; the last ones are left out when they hold their defaults
_REQUIRED = 9


def canonical_id(number: int) -> str:
    """The id of a subscriber who came without one. Pure."""
    return f"sub-n{number}"


def canonical_number(sub_id: str) -> int | None:
    """The number a `sub-n<number>` id names (None for any other id). Pure."""
    found = _CANONICAL.match(sub_id)
    return int(found.group(1)) if found else None


def record_key(keys: Keys, number: int) -> str:
    """The hash holding a number's record. Pure."""
    return keys.subs_records(number // RECORD_BUCKET)


def contact_key(keys: Keys, contact: str) -> str:
    """The hash holding a contact's entry. Pure."""
    return keys.subs_contacts(zlib.crc32(contact.encode()) % CONTACT_BUCKETS)


def encode(sub: Subscriber, number: int) -> str:
    """A record as stored: a JSON array (consent in milliseconds), defaults left out at its
    end. Pure."""
    row: list[Any] = [
        0 if sub.id == canonical_id(number) else sub.id, sub.phone or 0, sub.email or 0,
        sub.language, sub.areas, ",".join(sub.channels), _STATUS[sub.status],
        round(sub.consent_at.timestamp() * 1000), sub.consent_source,
        0 if sub.topics == [ALL_TOPICS] else sub.topics,
        0 if sub.role == "resident" else sub.role, int(sub.drills), sub.lists]
    while len(row) > _REQUIRED and not row[-1]:
        row.pop()
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def decode(number: int, raw: str) -> Subscriber:
    """A stored record as a Subscriber (not validated again: the registry wrote it; a
    channel an older release stored twice counts once). Pure."""
    row = json.loads(raw)
    row += [0] * (_FIELDS - len(row))
    (sub_id, phone, email, language, areas, channels, status, consent, source, topics, role,
     drills, lists) = row
    return Subscriber.model_construct(
        id=sub_id or canonical_id(number), phone=phone or None, email=email or None,
        language=language, areas=areas, topics=topics or [ALL_TOPICS],
        channels=list(dict.fromkeys(channels.split(","))), role=role or "resident",
        drills=bool(drills), lists=lists or [], status=_STATUS_OF[status],
        consent_at=datetime.fromtimestamp(consent / 1000, UTC), consent_source=source)


def index_bits(keys: Keys, sub: Subscriber) -> list[str]:
    """Every index bitmap a subscriber is in (the active one only while active). Pure."""
    found = [keys.subs_bits("area", a) for a in sub.areas]
    found += [keys.subs_bits("topic", t) for t in sub.topics]
    found += [keys.subs_bits("channel", c) for c in sub.channels]
    found.append(keys.subs_bits("lang", sub.language))
    if sub.drills:
        found.append(keys.subs_bits("drills", "yes"))
    found += [keys.subs_bits("list", name) for name in sub.lists]
    if sub.status == "active":
        found.append(keys.subs_active())
    return found


_BITS_OF_BYTE = [tuple(i for i in range(8) if b & (0x80 >> i)) for b in range(256)]


def set_bits(data: bytes, first_bit: int = 0) -> list[int]:
    """The offsets of the bits set in a bitmap's bytes (Redis numbers a byte's bits from
    the most significant), counted from `first_bit` (the bit of data[0]). Pure."""
    out: list[int] = []
    for i, byte in enumerate(data):
        if byte:
            base = first_bit + i * 8
            out += [base + b for b in _BITS_OF_BYTE[byte]]
    return out


# --- reading -------------------------------------------------------------------------------

async def load(redis: Redis, keys: Keys, numbers: Sequence[int]) -> dict[int, Subscriber]:
    """The records of these numbers (one HMGET per bucket, in one round trip); a number
    without a record is left out."""
    buckets: dict[int, list[int]] = {}
    for n in numbers:
        buckets.setdefault(n // RECORD_BUCKET, []).append(n)
    if not buckets:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for bucket, members in buckets.items():
            pipe.hmget(keys.subs_records(bucket), [str(n) for n in members])
        replies = await pipe.execute()
    return {n: decode(n, raw) for members, raws in zip(buckets.values(), replies, strict=True)
            for n, raw in zip(members, raws, strict=True) if raw is not None}


async def number_of(redis: Redis | Pipeline, keys: Keys, sub_id: str) -> int | None:
    """The number of an id (whether or not a record has it)."""
    found = await redis.hget(keys.subs_ids(), sub_id)
    return int(found) if found else canonical_number(sub_id)


async def numbers_of(redis: Redis, keys: Keys, sub_ids: Sequence[str]) -> list[int | None]:
    """The number of each id, in one round trip."""
    if not sub_ids:
        return []
    mapped = await redis.hmget(keys.subs_ids(), list(sub_ids))
    return [int(m) if m else canonical_number(i) for i, m in zip(sub_ids, mapped, strict=True)]


async def read(redis: Redis | Pipeline, keys: Keys, number: int) -> Subscriber | None:
    """One record by number."""
    raw = await redis.hget(record_key(keys, number), str(number))
    return decode(number, raw) if raw else None


async def record_of(redis: Redis | Pipeline, keys: Keys, sub_id: str
                    ) -> tuple[int, Subscriber] | None:
    """The number and record of the subscriber with this id, if any."""
    number = await number_of(redis, keys, sub_id)
    sub = await read(redis, keys, number) if number is not None else None
    return (number, sub) if number is not None and sub is not None and sub.id == sub_id \
        else None


async def by_id(redis: Redis, keys: Keys, sub_id: str) -> Subscriber | None:
    """The subscriber with this id, if any."""
    found = await record_of(redis, keys, sub_id)
    return found[1] if found is not None else None


async def number_by_contact(redis: Redis | Pipeline, keys: Keys, contact: str) -> int | None:
    """The number of the subscriber with this phone or (lower-case) email, if any."""
    found = await redis.hget(contact_key(keys, contact), contact)
    return int(found) if found else None


async def by_contact(redis: Redis, keys: Keys, contact: str) -> Subscriber | None:
    """The subscriber with this phone or (lower-case) email, if any."""
    number = await number_by_contact(redis, keys, contact)
    return await read(redis, keys, number) if number is not None else None


async def every(redis: Redis, keys: Keys) -> AsyncIterator[tuple[int, Subscriber]]:
    """Every record with its number, in number order, a bucket at a time."""
    last = int(await redis.get(keys.subs_next()) or 0)
    for bucket in range(last // RECORD_BUCKET + 1):
        rows = await redis.hgetall(keys.subs_records(bucket))
        for n in sorted(int(k) for k in rows):
            yield n, decode(n, rows[str(n)])


async def members(redis: Redis, key: str) -> list[int]:
    """The numbers set in a bitmap (read whole: for upkeep, not for fan-outs)."""
    raw = await redis.execute_command("GET", key, NEVER_DECODE=True)
    return set_bits(raw or b"")


_ACTIVE = Script("""
local out = {}
for i, id in ipairs(ARGV) do
  local n = redis.call('HGET', KEYS[1], id) or string.match(id, '^sub%-n([1-9][0-9]*)$')
  if n and #n > 10 then n = nil end  -- no bitmap reaches that far
  out[i] = n and redis.call('GETBIT', KEYS[2], tonumber(n)) or 0
end
return out
""")


def queue_active(pipe: Pipeline, keys: Keys, sub_ids: Sequence[str]) -> None:
    """Queue the question whether each id's subscriber is active (its reply: a list of 1
    or 0 in the same order)."""
    _ACTIVE.queue(pipe, [keys.subs_ids(), keys.subs_active()], list(sub_ids))


# --- writing (inside the caller's transaction) ----------------------------------------------

_TAKE = """
local wanted = tonumber(ARGV[1])
if wanted > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return redis.call('INCR', KEYS[1])
"""


async def new_number(redis: Redis, keys: Keys, sub_id: str = "") -> int:
    """The number of a new record. An id `sub-n<k>` (an exported file's) keeps its number
    when k was never handed out here; any other number is the next one. So an id of the
    form `sub-n<k>` never names another number than k, and the id map holds only ids of
    other forms: no id in it can shadow a number handed out later."""
    wanted = canonical_number(sub_id)
    if wanted is None:
        return int(await redis.incr(keys.subs_next()))
    return int(await redis.eval(_TAKE, 1, keys.subs_next(), wanted))


def id_for(sub_id: str, number: int) -> str:
    """The id a new record keeps: the one it came with, unless that one is `sub-n<k>` of
    another number (k was handed out here before: the record gets its own). Pure."""
    return sub_id if sub_id and canonical_number(sub_id) in (None, number) \
        else canonical_id(number)


def queue_write(pipe: Pipeline, keys: Keys, number: int, old: Subscriber | None,
                new: Subscriber, stale_contacts: Sequence[str] = (),
                with_contacts: bool = True) -> None:
    """Inside MULTI: the record, its index bits (the old ones cleared first), its contacts
    unless not `with_contacts` (and `stale_contacts` it no longer has removed) and, for an
    id of another form, its entry in the id map."""
    for index in index_bits(keys, old) if old is not None else []:
        pipe.setbit(index, number, 0)
    pipe.hset(record_key(keys, number), str(number), encode(new, number))
    for index in index_bits(keys, new):
        pipe.setbit(index, number, 1)
    for contact in new.contact_keys() if with_contacts else []:
        pipe.hset(contact_key(keys, contact), contact, number)
    for contact in stale_contacts:
        pipe.hdel(contact_key(keys, contact), contact)
    if new.id != canonical_id(number):
        pipe.hset(keys.subs_ids(), new.id, number)
