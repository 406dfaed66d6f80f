"""Version 2 -> 3: the compact subscriber registry (subscribers.store).

Each subscriber gets a number, in the order of their ids; their id stays what it was (kept
in the id map), so signed unsubscribe and confirmation links, delivery records and waiting
web subscriptions still name them. Their record moves into a bucket, the contact index into
contact buckets (each entry leading where it led before), the index sets become bitmaps, and
so do what an incident's statements reached. A fan-out not finished keeps going: its
batches' ids become numbers, and an audience not cut through yet becomes a bitmap cut
again from its start (a delivery already claimed is not handed over again; its `targeted`
counters may then count some twice). Then the old keys go.

Ids of the form `sub-n<k>` (imported so) are numbered first, each keeping its k. Re-running
after a crash midway finds what was done: a subscriber whose id has a record already is
not numbered again, keys of the old types are converted only once."""

from __future__ import annotations

from pydantic import ValidationError

from coordinator.keys import Keys
from coordinator.migrations import layout2
from coordinator.migrations.step import Step
from coordinator.migrations.version import literal_pattern
from coordinator.state import Redis
from coordinator.subscribers import store
from coordinator.subscribers.models import Subscriber


async def number_subscribers(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """Give every subscriber of the old layout a number and a record in the new one."""
    numbered = unreadable = 0
    # ids of the form `sub-n<k>` (imported so) first, in order, so each keeps its number k
    ids = sorted(await redis.smembers(layout2.every(keys)), key=lambda i: (
        store.canonical_number(i) is None, store.canonical_number(i) or 0, i))
    for sub_id in ids:
        if await store.by_id(redis, keys, sub_id) is not None:
            continue  # done by an earlier run
        raw = await redis.get(layout2.record(keys, sub_id))
        try:
            sub = Subscriber.model_validate_json(raw) if raw else None
        except ValidationError:
            sub = None
        if sub is None:
            unreadable += 1
            continue
        numbered += 1
        if apply:
            number = await store.new_number(redis, keys, sub_id)
            async with redis.pipeline(transaction=True) as pipe:
                store.queue_write(pipe, keys, number, None, sub, with_contacts=False)
                await pipe.execute()
    lines = [f"subscribers: {numbered} numbered, their records and indexes made compact"
             ] if numbered else []
    if unreadable:
        lines.append(f"subscribers: {unreadable} ids without a readable record left out")
    return lines


async def move_contacts(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """Each contact index entry into its bucket, leading to the number of the id it led
    to; then the old entry goes."""
    prefix = layout2.by_contact(keys, "")
    moved = 0
    async for key in redis.scan_iter(match=literal_pattern(prefix) + "*", count=1000):
        sub_id = await redis.get(key)
        held = await store.record_of(redis, keys, sub_id) if sub_id else None
        number = held[0] if held is not None else None
        moved += 1
        if apply:
            contact = key.removeprefix(prefix)
            async with redis.pipeline(transaction=True) as pipe:
                if number is not None:
                    pipe.hset(store.contact_key(keys, contact), contact, number)
                pipe.delete(key)
                await pipe.execute()
    return [f"contact index: {moved} entries into buckets"] if moved else []


async def _bitmap_of(redis: Redis, keys: Keys, key: str) -> None:
    """A set of subscriber ids at `key` becomes a bitmap of their numbers, at once."""
    ids = sorted(await redis.smembers(key))
    numbers = [n for n in await store.numbers_of(redis, keys, ids) if n is not None]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if numbers:
            pipe.execute_command("BITFIELD", key, *[a for n in numbers
                                                    for a in ("SET", "u1", n, 1)])
        await pipe.execute()


async def convert_dispatch(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """What incidents reached, audiences of fan-outs not cut through, and the batches of
    fan-outs not finished: ids become numbers."""
    reached = audiences = batches = 0
    pattern = literal_pattern(f"{keys.prefix}:") + "*"
    async for key in redis.scan_iter(match=pattern, count=1000, _type="set"):
        if key.startswith(f"{keys.prefix}:incident:") and key.endswith(":reached"):
            reached += 1
        elif key.startswith(f"{keys.prefix}:dispatch:") and key.endswith(":audience"):
            audiences += 1
            if apply:
                statement_id = key.removeprefix(f"{keys.prefix}:dispatch:").removesuffix(
                    ":audience")
                await redis.hset(keys.dispatch(statement_id), "cursor", 0)
        else:
            continue
        if apply:
            await _bitmap_of(redis, keys, key)
    batch = literal_pattern(f"{keys.prefix}:dispatch:") + "*:batch:*"
    async for key in redis.scan_iter(match=batch, count=1000, _type="string"):
        raw = await redis.get(key) or ""
        ids = [i for i in raw.split(",") if i]
        if not any(i.startswith("sub-") for i in ids):
            continue
        batches += 1
        if apply:
            numbers = await store.numbers_of(redis, keys, ids)
            await redis.set(key, ",".join(str(n) for n in numbers if n is not None),
                            keepttl=True)
    return [f"{what}: {n} converted to subscriber numbers" for what, n in (
        ("incidents' reached subscribers", reached), ("audiences not cut through", audiences),
        ("batches not finished", batches)) if n]


async def drop_old_keys(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """The old records, index sets and id set."""
    gone = 0
    patterns = [literal_pattern(layout2.record(keys, "")) + "*",
                *(literal_pattern(p) + "*" for p in layout2.index_prefixes(keys))]
    for pattern in patterns:
        async for key in redis.scan_iter(match=pattern, count=1000):
            if await redis.type(key) in ("set", "string") and not key.startswith(
                    keys.subs_bits("", "").rstrip(":")):
                gone += 1
                if apply:
                    await redis.delete(key)
    for key in (layout2.every(keys), layout2.active(keys)):
        if await redis.exists(key):
            gone += 1
            if apply:
                await redis.delete(key)
    return [f"old subscriber keys: {gone} removed"] if gone else []


async def upgrade(redis: Redis, keys: Keys, apply: bool) -> list[str]:
    """The whole step, in this order (each part needs the numbers the first gives)."""
    lines = await number_subscribers(redis, keys, apply)
    lines += await move_contacts(redis, keys, apply)
    lines += await convert_dispatch(redis, keys, apply)
    return lines + await drop_old_keys(redis, keys, apply)


STEP = Step(
    source=2,
    summary="number subscribers and keep the registry compact: records in buckets, "
            "indexes as bitmaps (ids stay as they are)",
    work=upgrade,
)
