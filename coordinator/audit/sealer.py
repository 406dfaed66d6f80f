"""Sealing: new audit entries are chained a batch at a time, twice a second.

Audit entries are written in the same MULTI as the change they record
(:func:`coordinator.state.queue_audit`), so they cannot read the chain's head without
making it a key every transaction contends on. The sealer follows them instead, in the
stream's order (an entry id is assigned when its MULTI commits, so nothing can appear
behind what was sealed): it reads what came after the head, writes the links, each
incident's own chain and, now and then, a signed checkpoint, and moves the head, all in
one transaction on the head. Two sealers at once (their batches perhaps of different sizes)
compete on the head: the second finds it moved and writes nothing.

`loa scheduler` seals, off the workers' event loops (their CPU goes to reports and
deliveries); while it does, it says so in Redis (``Keys.audit_sealer``, renewed after
each batch it sealed) and the workers leave sealing to it, looking again between batches.
Without a scheduler, or without LOA_SECRET_KEY there, or with another one than the key
that signed the newest checkpoint, the workers seal; when its rounds fail, they take over
:data:`SEALER_MARK_S` later.

What is not sealed yet (a fraction of a second, unless every sealer is down) could be
changed unseen; `loa doctor` reports entries left unsealed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from coordinator.audit.chain import (
    GENESIS,
    Checkpoint,
    Entry,
    IncidentLink,
    Link,
    digest,
    incident_hash,
    runs,
)
from coordinator.errors import Contention
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, transact

BATCH = 5000
"""Audit entries sealed by one transaction at most."""

CHECKPOINT_KEY_PURPOSE = "audit-checkpoint"
"""What the checkpoint key is derived for (Settings.key_for)."""

SEAL_EVERY_S = 0.5
"""How often a sealer looks for new entries."""

SCHEDULER_BATCH = 100
"""Entries the scheduler seals in one transaction at most: sealing takes about 70 µs of
CPU an entry, and its timers wait while a batch is worked out (100: about 7 ms)."""

SEALER_MARK_S = 5
"""How long the scheduler's word that it seals holds after its last batch: the workers take
sealing back this long after the scheduler died, hung or began to fail."""


async def stream_items(redis: Redis, key: str, page: int = 2000
                       ) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A stream's entries, oldest first, read a page at a time."""
    after = "-"
    while True:
        items = await redis.xrange(key, min=after, count=page)
        for item in items:
            yield item
        if len(items) < page:
            return
        after = f"({items[-1][0]}"


def entries_of(raw: list[tuple[str, dict[str, str]]]) -> list[Entry]:
    """Stream entries as chain entries."""
    return [Entry(entry_id, fields.get("event", "")) for entry_id, fields in raw]


async def seal(redis: Redis, keys: Keys, signing_key: bytes, now: datetime,
               checkpoint_every_s: float, limit: int = BATCH) -> int:
    """Seal up to `limit` audit entries not sealed yet; how many were sealed (0 also when
    another sealer sealed them first). A checkpoint is made when the last one is older
    than `checkpoint_every_s` and the chain has moved since."""

    async def body(pipe: Pipeline) -> int:
        head = await pipe.hgetall(keys.audit_head())
        after = head.get("last", "0-0")
        raw = await redis.xrange(keys.audit(), min=f"({after}", count=limit)
        entries = entries_of(raw)
        seq, prev = int(head.get("seq", 0)), head.get("hash", GENESIS)
        links: list[Link] = []
        for run in runs(entries):
            seq += 1
            links.append(Link.seal(seq, run, prev))
            prev = links[-1].hash
        chained = await _incident_links(redis, keys, entries)
        checkpoint = _due_checkpoint(head, links, signing_key, now, checkpoint_every_s)
        pipe.multi()
        for link in links:
            pipe.xadd(keys.audit_links(), link.fields())
        for incident_id, items in chained.items():
            pipe.rpush(keys.incident_chain(incident_id), *[i.text() for i in items])
        moved: dict[str, Any] = {}
        if links:
            moved = {"seq": seq, "hash": prev, "last": links[-1].last}
        if checkpoint is not None:
            pipe.xadd(keys.audit_checkpoints(), checkpoint.fields())
            moved.update(checkpoint_at=now.timestamp(), checkpoint_seq=checkpoint.seq)
        if moved:
            pipe.hset(keys.audit_head(), mapping=moved)
        return len(entries)

    try:
        return await transact(redis, [keys.audit_head()], body, attempts=1)
    except Contention:
        return 0  # another sealer moved the head: it sealed these


async def seal_backlog(redis: Redis, keys: Keys, signing_key: bytes,
                       checkpoint_every_s: float,
                       between: Callable[[], Awaitable[bool]] | None = None,
                       limit: int = BATCH) -> int:
    """Seal everything not sealed yet (after an outage, a backlog of many batches), `limit`
    entries a transaction, asking `between` after each full batch whether to go on; how
    many entries this call sealed."""
    total = 0
    while True:
        sealed = await seal(redis, keys, signing_key, utcnow(), checkpoint_every_s, limit)
        total += sealed
        if sealed < limit or (between is not None and not await between()):
            return total


async def seal_as_worker(redis: Redis, keys: Keys, signing_key: bytes,
                         checkpoint_every_s: float) -> int | None:
    """A worker's round: seal what is not sealed yet unless the scheduler does (asked again
    after each batch of a backlog); how many entries it sealed, None when it left them."""
    async def not_elsewhere() -> bool:
        return not await sealed_elsewhere(redis, keys)

    if not await not_elsewhere():
        return None
    return await seal_backlog(redis, keys, signing_key, checkpoint_every_s, not_elsewhere)


async def seal_as_scheduler(redis: Redis, keys: Keys, signing_key: bytes,
                            checkpoint_every_s: float) -> int | None:
    """The scheduler's round: seal what is not sealed yet, SCHEDULER_BATCH entries a
    transaction (its timers run between them), saying after each batch that it does (a
    backlog longer than SEALER_MARK_S stays its own); how many entries it sealed. None,
    sealing nothing and saying nothing, when the trail's newest checkpoint was signed with
    another key: a scheduler whose LOA_SECRET_KEY is not the workers' leaves the trail to
    them rather than sign checkpoints `loa audit verify` would refuse."""
    if not await newest_checkpoint_signed_with(redis, keys, signing_key):
        return None

    async def said() -> bool:
        await say_sealing(redis, keys)
        return True

    sealed = await seal_backlog(redis, keys, signing_key, checkpoint_every_s, said,
                                SCHEDULER_BATCH)
    await say_sealing(redis, keys)
    return sealed


async def newest_checkpoint_signed_with(redis: Redis, keys: Keys, signing_key: bytes) -> bool:
    """Whether the trail's newest checkpoint was signed with `signing_key` (True when there
    is none yet, or it cannot be read: verification names that)."""
    newest = await redis.xrevrange(keys.audit_checkpoints(), count=1)
    if not newest:
        return True
    try:
        return Checkpoint.from_fields(newest[0][1]).signed_by([signing_key])
    except ValueError:
        return True


async def say_sealing(redis: Redis, keys: Keys) -> None:
    """The scheduler's word, after each batch it sealed, that it seals (for SEALER_MARK_S)."""
    await redis.set(keys.audit_sealer(), "scheduler", ex=SEALER_MARK_S)


async def sealed_elsewhere(redis: Redis, keys: Keys) -> bool:
    """Whether the scheduler seals (it said so within SEALER_MARK_S): a worker then leaves
    it to it."""
    return bool(await redis.exists(keys.audit_sealer()))


async def _incident_links(redis: Redis, keys: Keys, entries: list[Entry]
                          ) -> dict[str, list[IncidentLink]]:
    """The links each incident's chain gains: one per entry of its timeline."""
    per_incident: dict[str, list[Entry]] = {}
    for entry in entries:
        incident_id = entry.event.get("incident_id")
        if isinstance(incident_id, str) and incident_id:
            per_incident.setdefault(incident_id, []).append(entry)
    if not per_incident:
        return {}
    async with redis.pipeline(transaction=False) as reads:
        for incident_id in per_incident:
            reads.lindex(keys.incident_chain(incident_id), -1)
        tails = await reads.execute()
    out: dict[str, list[IncidentLink]] = {}
    for (incident_id, items), tail in zip(per_incident.items(), tails, strict=True):
        prev = IncidentLink.parse(tail).hash if tail else GENESIS
        chained: list[IncidentLink] = []
        for entry in items:
            d = digest([entry])
            prev = incident_hash(prev, d)
            chained.append(IncidentLink(entry.id, d, prev))
        out[incident_id] = chained
    return out


def _due_checkpoint(head: dict[str, str], links: list[Link], key: bytes, now: datetime,
                    every_s: float) -> Checkpoint | None:
    """A signed checkpoint of the head after `links`, if one is due. Pure."""
    last_at = float(head.get("checkpoint_at", 0))
    checkpointed_seq = int(head.get("checkpoint_seq", -1))
    if now.timestamp() - last_at < every_s:
        return None
    if links:
        tip = links[-1]
        return Checkpoint(tip.seq, tip.last, tip.hash, now.isoformat()).signed(key)
    seq = int(head.get("seq", 0))
    if seq == 0 or seq == checkpointed_seq:
        return None
    return Checkpoint(seq, head["last"], head["hash"], now.isoformat()).signed(key)
