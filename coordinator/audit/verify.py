"""Verification: walk the audit chain from its start (or from the checkpoint it was pruned
to) and name the first place where what Redis holds no longer matches what was sealed.

Checked, in order: every checkpoint's signature; each link's own hash and its hash
before; the audit entries each link sealed (their ids, their count, their digest); the
checkpoints and any heads the caller kept, against the recomputed chain; then each
incident's chain against its timeline and against the global chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from coordinator.audit.chain import (
    GENESIS,
    Checkpoint,
    Entry,
    IncidentLink,
    Link,
    digest,
    incident_hash,
)
from coordinator.audit.sealer import stream_items
from coordinator.keys import Keys
from coordinator.state import Redis

Sealed = dict[str, tuple[str, str]]
"""Audit entry id -> (its incident, its digest), for the entries the global chain sealed."""


@dataclass(frozen=True)
class Broken:
    """The first place where the record does not match its seal."""

    where: str  # e.g. "audit entry 1733-0", "link 42", "checkpoint 7", "incident I timeline"
    why: str

    def line(self) -> str:
        """In plain words."""
        return f"{self.where}: {self.why}"


@dataclass
class Verification:
    """What was checked, and the first break if any."""

    links: int = 0
    entries: int = 0
    checkpoints: int = 0
    incidents: int = 0
    unsealed: int = 0
    started_at: str = "the first entry"
    head: tuple[int, str] = (0, GENESIS)
    broken: Broken | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing broken."""
        return self.broken is None


async def verify(redis: Redis, keys: Keys, signing_keys: Sequence[bytes],
                 kept: Sequence[tuple[int, str]] = (), incident: str | None = None
                 ) -> Verification:
    """Check the chains. `kept`: heads (seq, hash) someone kept from /audit/head, which
    the chain must still pass through. `incident`: check only that incident's chain
    (the global chain is always checked: the incident's is anchored in it)."""
    result = Verification()
    checkpoints = await _checkpoints(redis, keys, signing_keys, result)
    if result.broken:
        return result
    sealed = await _walk_links(redis, keys, checkpoints, dict(kept), result)
    if result.broken:
        return result
    await _incidents(redis, keys, sealed, incident, result)
    return result


async def _checkpoints(redis: Redis, keys: Keys, signing_keys: Sequence[bytes],
                       result: Verification) -> dict[int, Checkpoint]:
    found: dict[int, Checkpoint] = {}
    async for entry_id, fields in stream_items(redis, keys.audit_checkpoints()):
        try:
            checkpoint = Checkpoint.from_fields(fields)
        except ValueError as exc:
            result.broken = Broken(f"checkpoint {entry_id}", f"unreadable ({exc})")
            return found
        if not checkpoint.signed_by(signing_keys):
            result.broken = Broken(f"checkpoint {checkpoint.seq}",
                                   "its signature is not Loa's (made or changed without "
                                   "LOA_SECRET_KEY)")
            return found
        found[checkpoint.seq] = checkpoint
    result.checkpoints = len(found)
    return found


async def _walk_links(redis: Redis, keys: Keys, checkpoints: dict[int, Checkpoint],
                      kept: dict[int, str], result: Verification) -> Sealed:
    """Walk the global chain; every sealed entry that has an incident."""
    sealed: Sealed = {}
    entries = stream_items(redis, keys.audit())
    expected: tuple[int, str] | None = None  # (seq, hash) the next link must follow
    async for stream_id, fields in stream_items(redis, keys.audit_links()):
        try:
            link = Link.from_fields(fields)
        except ValueError as exc:
            result.broken = Broken(f"link {stream_id}", f"unreadable ({exc})")
            return sealed
        expected = expected or _start(link, checkpoints, result)
        if expected is None:
            return sealed
        got = [Entry(i, f.get("event", "")) async for i, f in _take(entries, link.count)]
        result.broken = (_link_broken(link, expected) or _entries_broken(link, got)
                         or _heads_broken(link, checkpoints, kept))
        if result.broken:
            return sealed
        incident_id = got[0].event.get("incident_id") if link.count == 1 else None
        if isinstance(incident_id, str) and incident_id:
            sealed[got[0].id] = (incident_id, link.digest)
        result.links += 1
        result.entries += link.count
        expected = (link.seq, link.hash)
    result.unsealed = sum([1 async for _ in entries])
    result.head = expected or (0, GENESIS)
    beyond = [seq for seq in [*checkpoints, *kept] if seq > result.head[0]]
    if beyond:
        result.broken = Broken(f"link {min(beyond)}",
                               f"a checkpoint or kept head names link {min(beyond)}, but the "
                               f"chain ends at link {result.head[0]}: links were removed")
    return sealed


def _link_broken(link: Link, expected: tuple[int, str]) -> Broken | None:
    """Whether the link follows the one before and still says what it sealed."""
    if link.seq != expected[0] + 1 or link.prev != expected[1]:
        return Broken(f"link {link.seq}", f"does not follow link {expected[0]}: links were "
                                          "removed, reordered or rewritten")
    if link.recomputed() != link.hash:
        return Broken(f"link {link.seq}", "its hash does not match what it says: the link "
                                          "was changed")
    return None


def _heads_broken(link: Link, checkpoints: dict[int, Checkpoint], kept: dict[int, str]
                  ) -> Broken | None:
    """Whether a signed checkpoint or a kept head of this link names another hash."""
    checkpoint = checkpoints.get(link.seq)
    for what, want in (("signed checkpoint", checkpoint.hash if checkpoint else None),
                       ("kept head", kept.get(link.seq))):
        if want is not None and want != link.hash:
            return Broken(f"link {link.seq}", f"the chain no longer matches the {what} of "
                                              f"link {link.seq}: history up to it was "
                                              "rewritten")
    return None


def _start(first: Link, checkpoints: dict[int, Checkpoint], result: Verification
           ) -> tuple[int, str] | None:
    """Where the walk starts: before link 1, or at the checkpoint the chain was pruned to."""
    if first.seq == 1:
        return (0, GENESIS)
    checkpoint = checkpoints.get(first.seq - 1)
    if checkpoint is None:
        result.broken = Broken(f"link {first.seq}",
                               f"the chain starts at link {first.seq} and no signed "
                               f"checkpoint vouches for link {first.seq - 1}")
        return None
    result.started_at = f"checkpoint {checkpoint.seq} ({checkpoint.at})"
    return (checkpoint.seq, checkpoint.hash)


async def _take(entries: AsyncIterator[tuple[str, dict[str, str]]], count: int
                ) -> AsyncIterator[tuple[str, dict[str, str]]]:
    for _ in range(count):
        try:
            yield await anext(entries)
        except StopAsyncIteration:
            return


def _entries_broken(link: Link, got: list[Entry]) -> Broken | None:
    """Whether the entries read for `link` are those it sealed; the first difference."""
    if not got:
        return Broken(f"audit entry {link.first}", f"sealed by link {link.seq}, it is gone")
    if got[0].id != link.first:
        first = min(got[0].id, link.first, key=_id_order)
        return Broken(f"audit entry {first}",
                      f"link {link.seq} sealed entries from {link.first}, the stream now has "
                      f"{got[0].id} there: entries were removed or added")
    if len(got) != link.count or got[-1].id != link.last:
        return Broken(f"audit entry {link.first}",
                      f"link {link.seq} sealed {link.count} entries to {link.last}; the "
                      f"stream has {len(got)} to {got[-1].id} there: entries were removed "
                      "or added")
    if digest(got) != link.digest:
        if link.count == 1:
            return Broken(f"audit entry {link.first}", f"changed after link {link.seq} "
                                                       "sealed it")
        return Broken(f"audit entries {link.first} to {link.last}",
                      f"one of these {link.count} delivery entries changed after link "
                      f"{link.seq} sealed them")
    return None


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return (int(ms), int(n or 0))


async def _incidents(redis: Redis, keys: Keys, sealed: Sealed, only: str | None,
                     result: Verification) -> None:
    """Each incident's chain against its timeline, and against the global chain."""
    if only is not None:
        incidents = [only]
    else:
        start, end = keys.incident_chain("").split("::")
        names = [k async for k in redis.scan_iter(match=keys.incident_chains(), count=1000)]
        incidents = sorted({*(n[len(start) + 1:-len(end) - 1] for n in names),
                            *(incident for incident, _ in sealed.values())})
    owned: dict[str, list[str]] = {}
    for entry_id, (owner, _) in sealed.items():
        owned.setdefault(owner, []).append(entry_id)
    for incident_id in incidents:
        broken = await _incident(redis, keys, incident_id, sealed, owned.get(incident_id, []))
        if broken:
            result.broken = broken
            return
        result.incidents += 1


async def _incident(redis: Redis, keys: Keys, incident_id: str, sealed: Sealed,
                    owned: list[str]) -> Broken | None:
    chain = await redis.lrange(keys.incident_chain(incident_id), 0, -1)
    timeline = await redis.lrange(keys.timeline(incident_id), 0, len(chain) - 1)
    where = f"incident {incident_id}"
    if len(timeline) < len(chain):
        return Broken(f"{where} timeline", f"{len(chain)} entries were sealed, "
                                           f"{len(timeline)} are left: entries were removed")
    prev = GENESIS
    for number, (text, data) in enumerate(zip(chain, timeline, strict=True), start=1):
        try:
            link = IncidentLink.parse(text)
        except ValueError:
            return Broken(f"{where} chain entry {number}", "unreadable")
        if digest([Entry(link.entry_id, data)]) != link.digest:
            return Broken(f"{where} timeline entry {number} (audit entry {link.entry_id})",
                          "changed after it was sealed")
        prev = incident_hash(prev, link.digest)
        if prev != link.hash:
            return Broken(f"{where} chain entry {number}",
                          "does not follow the one before: the incident's chain was "
                          "rewritten")
        if link.entry_id in sealed and sealed[link.entry_id] != (incident_id, link.digest):
            return Broken(f"{where} timeline entry {number} (audit entry {link.entry_id})",
                          "differs from the entry the global chain sealed")
    ids = {IncidentLink.parse(text).entry_id for text in chain}
    missing = sorted((entry_id for entry_id in owned if entry_id not in ids), key=_id_order)
    if missing:
        return Broken(f"{where} timeline", f"audit entry {missing[0]} of this incident is "
                                           "sealed in the global chain but gone from the "
                                           "incident's chain: entries were removed")
    return None
