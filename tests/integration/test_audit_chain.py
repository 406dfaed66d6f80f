"""The audit chain on a real redis-server: entries written as Loa writes them (in MULTI, with
their timelines), sealed by the sealer, then changed, removed, rewritten or pruned the way
someone with Redis access could, and `verify` naming the first place that no longer holds.
Each test writes under its own prefix of one private Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.audit.chain import GENESIS, Entry, IncidentLink, Link, digest, incident_hash
from coordinator.audit.prune import prune
from coordinator.audit.sealer import (
    BATCH,
    seal,
    seal_as_scheduler,
    seal_as_worker,
    seal_backlog,
    sealed_elsewhere,
)
from coordinator.audit.verify import verify
from coordinator.embedded import Service
from coordinator.errors import LoaError
from coordinator.events import AuditEvent
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, connect, queue_audit, transact
from tests.integration.factories import REWRITE_AUDIT_ENTRY

pytestmark = pytest.mark.integration
KEY = b"checkpoint-key"
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
async def redis(redis_server: Service) -> AsyncIterator[Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:8]}")


async def audit(redis: Redis, keys: Keys, action: str, incident: str | None = None,
                at: datetime = T0) -> None:
    """One audit entry, written as every state change writes it: inside MULTI."""

    async def body(pipe: Pipeline) -> None:
        pipe.multi()
        queue_audit(pipe, keys, AuditEvent(at=at, actor="duty-1", action=action,
                                           interface="api", incident_id=incident))

    await transact(redis, [keys.audit_head()], body)


async def forge(redis: Redis, keys: Keys, entry_id: str, old: str, new: str) -> int:
    """Replace `old` by `new` in one audit entry, as someone with Redis access could."""
    original = (await redis.xrange(keys.audit(), entry_id, entry_id))[0][1]["event"]
    return int(await redis.eval(REWRITE_AUDIT_ENTRY, 1, keys.audit(), entry_id,
                                original.replace(old, new)))


async def a_day(redis: Redis, keys: Keys) -> list[str]:
    """Two incidents, a fan-out's deliveries between their steps; the stream's ids."""
    await audit(redis, keys, "incident.opened", "INC-1")
    await audit(redis, keys, "incident.opened", "INC-2")
    for _ in range(5):
        await audit(redis, keys, "delivery.sent")
    await audit(redis, keys, "approval.approved", "INC-1")
    await audit(redis, keys, "delivery.failed")
    await audit(redis, keys, "statement.published", "INC-1")
    return [entry_id for entry_id, _ in await redis.xrange(keys.audit())]


async def test_a_sealed_trail_verifies_and_counts_what_it_checked(redis: Redis, keys: Keys
                                                                   ) -> None:
    ids = await a_day(redis, keys)
    assert await seal(redis, keys, KEY, T0, 60) == len(ids) == 10
    # links: INC-1, INC-2, a run of 5 deliveries, approval, a run of 1, publication
    assert await redis.xlen(keys.audit_links()) == 6
    await audit(redis, keys, "incident.closed", "INC-2")  # not sealed yet
    result = await verify(redis, keys, [KEY])
    assert result.ok, result.broken
    assert (result.links, result.entries, result.checkpoints, result.incidents,
            result.unsealed) == (6, 10, 1, 2, 1)
    assert await seal(redis, keys, KEY, T0 + timedelta(seconds=1), 60) == 1
    assert await seal(redis, keys, KEY, T0 + timedelta(seconds=2), 60) == 0
    again = await verify(redis, keys, [KEY], incident="INC-2")
    assert again.ok and (again.links, again.unsealed, again.incidents) == (7, 0, 1)
    assert [c.split(" ")[0] for c in await redis.lrange(keys.incident_chain("INC-1"), 0, -1)
            ] == [ids[0], ids[7], ids[9]]


async def test_an_entry_changed_after_sealing_is_named(redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    assert await forge(redis, keys, ids[7], "duty-1", "duty-2") == 10
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None
    assert result.broken.where == f"audit entry {ids[7]}"
    assert "changed after link 4 sealed it" in result.broken.why


async def test_a_changed_delivery_names_its_run(redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    await forge(redis, keys, ids[4], "sent", "failed")
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None
    assert result.broken.where == f"audit entries {ids[2]} to {ids[6]}"


async def test_a_removed_entry_is_named(redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    await redis.xdel(keys.audit(), ids[1])
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None and result.broken.where == f"audit entry {ids[1]}"


async def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(redis: Redis, keys: Keys
                                                                     ) -> None:
    """Someone changes an entry and recomputes every link after it (they know the
    formula); they cannot sign a new checkpoint, and a head kept from /audit/head differs."""
    ids = await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    kept = await redis.hgetall(keys.audit_head())
    await forge(redis, keys, ids[7], "duty-1", "duty-2")
    await redis.delete(keys.audit_links())
    prev = GENESIS
    raw = await redis.xrange(keys.audit())
    groups = [[0], [1], [2, 3, 4, 5, 6], [7], [8], [9]]
    for seq, group in enumerate(groups, start=1):
        link = Link.seal(seq, [Entry(raw[i][0], raw[i][1]["event"]) for i in group], prev)
        await redis.xadd(keys.audit_links(), link.fields())
        prev = link.hash
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None and result.broken.where == "link 6"
    assert "signed checkpoint" in result.broken.why
    # without the checkpoint, the head someone kept still tells
    await redis.delete(keys.audit_checkpoints())
    held = await verify(redis, keys, [KEY], kept=[(int(kept["seq"]), kept["hash"])])
    assert held.broken is not None and "kept head" in held.broken.why
    # and the incident's timeline, a second copy of the entry, still has the original
    copy = await verify(redis, keys, [KEY])
    assert copy.broken is not None
    assert copy.broken.where == f"incident INC-1 timeline entry 2 (audit entry {ids[7]})"


async def test_a_forged_checkpoint_is_refused(redis: Redis, keys: Keys) -> None:
    await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    _, fields = (await redis.xrange(keys.audit_checkpoints()))[0]
    await redis.xadd(keys.audit_checkpoints(), {**fields, "hash": "e" * 64})
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None and result.broken.where == "checkpoint 6"
    assert (await verify(redis, keys, [b"another key"])).broken is not None


async def test_a_changed_timeline_entry_is_named(redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)
    timeline = await redis.lrange(keys.timeline("INC-1"), 0, -1)
    await redis.lset(keys.timeline("INC-1"), 1, timeline[1].replace("duty-1", "duty-9"))
    result = await verify(redis, keys, [KEY])
    assert result.broken is not None
    assert result.broken.where == f"incident INC-1 timeline entry 2 (audit entry {ids[7]})"
    await redis.lset(keys.timeline("INC-1"), 1, timeline[1])
    # the incident's chain and timeline rewritten together: the global chain still tells
    await redis.delete(keys.incident_chain("INC-1"), keys.timeline("INC-1"))
    await redis.rpush(keys.timeline("INC-1"), timeline[0])
    await seal_incident_only(redis, keys, "INC-1", ids[0], timeline[0])
    dropped = await verify(redis, keys, [KEY])
    assert dropped.broken is not None and dropped.broken.where == "incident INC-1 timeline"
    assert ids[7] in dropped.broken.why


async def seal_incident_only(redis: Redis, keys: Keys, incident: str, entry_id: str,
                             data: str) -> None:
    """Rebuild an incident's chain over one entry, as a forger would."""
    d = digest([Entry(entry_id, data)])
    await redis.rpush(keys.incident_chain(incident),
                      IncidentLink(entry_id, d, incident_hash(GENESIS, d)).text())


async def test_pruned_to_a_checkpoint_the_rest_still_verifies(redis: Redis, keys: Keys
                                                              ) -> None:
    await a_day(redis, keys)
    await seal(redis, keys, KEY, T0, 60)  # checkpoint at link 6
    with pytest.raises(LoaError, match="newest"):
        await prune(redis, keys, 6, "operator:root", "cli", T0)
    await audit(redis, keys, "incident.closed", "INC-1")
    await seal(redis, keys, KEY, T0 + timedelta(seconds=1), 60)
    with pytest.raises(LoaError, match="no checkpoint at link 3"):
        await prune(redis, keys, 3, "operator:root", "cli", T0)
    done = await prune(redis, keys, 6, "operator:root", "cli", T0)
    assert (done.entries_left, done.links_left) == (2, 1)  # the closing, and the prune itself
    await seal(redis, keys, KEY, T0 + timedelta(seconds=2), 60)
    result = await verify(redis, keys, [KEY])
    assert result.ok, result.broken
    assert result.started_at.startswith("checkpoint 6")
    assert (result.links, result.entries, result.incidents) == (2, 2, 2)


async def test_two_sealers_at_once_seal_each_entry_once(redis: Redis, keys: Keys) -> None:
    await a_day(redis, keys)
    sealed = await asyncio.gather(*[seal(redis, keys, KEY, T0, 60) for _ in range(4)])
    assert sum(sealed) == 10
    assert await redis.xlen(keys.audit_links()) == 6
    assert (await verify(redis, keys, [KEY])).ok


async def test_a_worker_leaves_sealing_to_the_scheduler_while_it_says_it_seals(
        redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    await redis.set(keys.audit_sealer(), "scheduler", ex=5)
    assert await seal_as_worker(redis, keys, KEY, 60) is None
    assert not await redis.exists(keys.audit_head())  # nothing sealed by the worker
    await redis.delete(keys.audit_sealer())  # the scheduler stopped (or its word expired)
    assert await seal_as_worker(redis, keys, KEY, 60) == len(ids)
    assert await redis.hget(keys.audit_head(), "last") == ids[-1]


async def test_the_scheduler_says_it_seals_and_a_backlog_stops_when_asked(
        redis: Redis, keys: Keys) -> None:
    async with redis.pipeline(transaction=False) as pipe:  # a backlog of two batches and one
        for n in range(2 * BATCH + 1):
            queue_audit(pipe, keys, AuditEvent(at=T0, actor="w", action="delivery.sent",
                                               interface="worker", subject=str(n)))
        await pipe.execute()
    asked = 0

    async def stop_after_the_first() -> bool:
        nonlocal asked
        asked += 1
        return False

    assert await seal_backlog(redis, keys, KEY, 60, stop_after_the_first) == BATCH
    assert asked == 1
    assert not await sealed_elsewhere(redis, keys)
    assert await seal_as_scheduler(redis, keys, KEY, 60) == BATCH + 1  # 100 a transaction
    assert await sealed_elsewhere(redis, keys)
    assert 0 < await redis.ttl(keys.audit_sealer()) <= 5
    assert (await verify(redis, keys, [KEY])).ok


async def test_a_scheduler_with_another_secret_leaves_sealing_to_the_workers(
        redis: Redis, keys: Keys) -> None:
    ids = await a_day(redis, keys)
    assert await seal_as_scheduler(redis, keys, KEY, 60) == len(ids)  # and a checkpoint
    assert await redis.xlen(keys.audit_checkpoints()) == 1
    await redis.delete(keys.audit_sealer())
    await audit(redis, keys, "incident.closed", "INC-1")
    assert await seal_as_scheduler(redis, keys, b"another-secret's key", 60) is None
    assert not await sealed_elsewhere(redis, keys)  # it did not say it seals
    assert await redis.hget(keys.audit_head(), "last") == ids[-1]  # nor seal
    assert await seal_as_worker(redis, keys, KEY, 60) == 1
    assert (await verify(redis, keys, [KEY])).ok
