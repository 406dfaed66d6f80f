"""Pruning: drop the audit stream and the chain's links up to a signed checkpoint, so the
record does not grow for ever; verification then starts from that checkpoint.

Incident timelines and their chains are kept (they are each incident's record, and
their own chain starts at the incident's first entry). Export what you drop first if
the law asks you to keep it (`loa audit verify --json` names the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from coordinator.audit.chain import Checkpoint, Link
from coordinator.audit.sealer import stream_items
from coordinator.errors import LoaError
from coordinator.events import AuditEvent, Interface
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, queue_audit, transact


@dataclass(frozen=True)
class Pruned:
    """What a prune dropped."""

    checkpoint: Checkpoint
    entries_left: int
    links_left: int


def _after(entry_id: str) -> str:
    """The smallest stream id after `entry_id`."""
    ms, _, n = entry_id.partition("-")
    return f"{ms}-{int(n or 0) + 1}"


async def prune(redis: Redis, keys: Keys, through_seq: int, actor: str,
                interface: Interface, now: datetime) -> Pruned:
    """Drop what link `through_seq` and the links before it sealed, and those links;
    LoaError when no checkpoint was made at that link (verification could not start
    there). Audited."""
    checkpoint = None
    async for _, fields in stream_items(redis, keys.audit_checkpoints()):
        found = Checkpoint.from_fields(fields)
        if found.seq == through_seq:
            checkpoint = found
    if checkpoint is None:
        raise LoaError(f"no checkpoint at link {through_seq}: prune only to a checkpoint "
                       "(`loa audit head` lists them)")
    keep_from = None
    async for stream_id, fields in stream_items(redis, keys.audit_links()):
        if Link.from_fields(fields).seq > through_seq:
            keep_from = stream_id
            break
    if keep_from is None:
        raise LoaError(f"link {through_seq} is the newest: prune once later links follow")
    cp = checkpoint

    async def body(pipe: Pipeline) -> None:
        pipe.multi()
        pipe.xtrim(keys.audit(), minid=_after(cp.last), approximate=False)
        pipe.xtrim(keys.audit_links(), minid=keep_from, approximate=False)
        queue_audit(pipe, keys, AuditEvent(
            at=now, actor=actor, action="audit.pruned", interface=interface,
            subject=f"checkpoint {cp.seq}", detail={"through_entry": cp.last,
                                                    "hash": cp.hash}))

    await transact(redis, [keys.audit_head()], body)
    return Pruned(cp, *await _counts(redis, keys))


async def _counts(redis: Redis, keys: Keys) -> tuple[int, int]:
    """Entries and links left."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.audit())
        pipe.xlen(keys.audit_links())
        entries, links = await pipe.execute()
    return int(entries), int(links)
