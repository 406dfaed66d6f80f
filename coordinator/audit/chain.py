"""The audit chain's arithmetic: digests of audit entries, links that chain them, and the
signed checkpoints that verification starts from. Pure.

A *link* seals the next audit entries in the stream's order: one entry, or a run of a
statement's delivery entries (one digest per run, so that a fan-out of a hundred
thousand messages adds hundreds or a thousand links, not a hundred thousand). Its hash covers the
hash of the link before it, so changing, removing or reordering any sealed entry breaks
every later link; a rewrite of the whole chain is caught by the signed checkpoints,
which the rewriter cannot sign, and by any head someone kept from /audit/head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

GENESIS = "0" * 64
"""The hash before the first link (and before an incident's first entry)."""

RUN_MAX = 1000
"""Delivery entries sealed by one link at most."""


@dataclass(frozen=True)
class Entry:
    """One audit stream entry: its id and the event JSON exactly as stored."""

    id: str
    data: str

    @cached_property
    def event(self) -> dict[str, Any]:
        """The decoded event ({} when the stored text is not a JSON object)."""
        try:
            value = json.loads(self.data)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest(entries: Iterable[Entry]) -> str:
    """The SHA-256 of entries' ids and texts, in order."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(f"{entry.id}\n{entry.data}\n".encode())
    return h.hexdigest()


def is_bulk(entry: Entry) -> bool:
    """A statement's delivery outcome: sealed in runs, not one by one (it has no incident
    timeline either)."""
    event = entry.event
    return str(event.get("action", "")).startswith("delivery.") and not event.get(
        "incident_id")


def runs(entries: Sequence[Entry]) -> list[list[Entry]]:
    """The entries cut into what each link seals, in order: consecutive delivery entries
    together (at most RUN_MAX), every other entry alone."""
    out: list[list[Entry]] = []
    last_bulk = False
    for entry in entries:
        bulk = is_bulk(entry)  # (each entry's JSON read once)
        if bulk and last_bulk and len(out[-1]) < RUN_MAX:
            out[-1].append(entry)
        else:
            out.append([entry])
        last_bulk = bulk
    return out


@dataclass(frozen=True)
class Link:
    """One link of the global chain: link number `seq` sealed `count` entries, from
    `first` to `last`, whose digest is `digest`; `prev` is the hash of link seq-1."""

    seq: int
    first: str
    last: str
    count: int
    digest: str
    prev: str
    hash: str

    @staticmethod
    def seal(seq: int, entries: Sequence[Entry], prev: str) -> Link:
        """The link that seals `entries` after the link whose hash is `prev`."""
        d = digest(entries)
        first, last = entries[0].id, entries[-1].id
        return Link(seq, first, last, len(entries), d, prev,
                    link_hash(prev, seq, first, last, len(entries), d))

    def fields(self) -> dict[str, str]:
        """As stored in the links stream. (Not `asdict`, which copies deeply: a fan-out's
        sealer writes a link for every timeline entry.)"""
        return {"seq": str(self.seq), "first": self.first, "last": self.last,
                "count": str(self.count), "digest": self.digest, "prev": self.prev,
                "hash": self.hash}

    @staticmethod
    def from_fields(fields: dict[str, str]) -> Link:
        """From the links stream; ValueError when a field is missing or not a number."""
        try:
            return Link(int(fields["seq"]), fields["first"], fields["last"],
                        int(fields["count"]), fields["digest"], fields["prev"], fields["hash"])
        except KeyError as exc:
            raise ValueError(f"no field {exc}") from exc

    def recomputed(self) -> str:
        """The hash this link must carry, from its own fields."""
        return link_hash(self.prev, self.seq, self.first, self.last, self.count, self.digest)


def link_hash(prev: str, seq: int, first: str, last: str, count: int, entries_digest: str
              ) -> str:
    """The hash of a link: everything it says, and the hash before it."""
    return _sha256(f"loa-audit-link\n{prev}\n{seq}\n{first}\n{last}\n{count}\n"
                   f"{entries_digest}")


def incident_hash(prev: str, entry_digest: str) -> str:
    """The next hash of an incident's own chain, over one timeline entry's digest."""
    return _sha256(f"loa-incident-link\n{prev}\n{entry_digest}")


@dataclass(frozen=True)
class IncidentLink:
    """One sealed timeline entry of an incident: `ENTRY_ID DIGEST HASH` as stored."""

    entry_id: str
    digest: str
    hash: str

    def text(self) -> str:
        """As stored in the incident's chain list."""
        return f"{self.entry_id} {self.digest} {self.hash}"

    @staticmethod
    def parse(text: str) -> IncidentLink:
        """From the incident's chain list; ValueError when it is not three words."""
        entry_id, d, h = text.split(" ")
        return IncidentLink(entry_id, d, h)


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at a moment, signed with a key only Loa holds."""

    seq: int
    last: str
    hash: str
    at: str  # ISO 8601, UTC
    signature: str = ""

    def payload(self) -> str:
        """What the signature covers."""
        return f"loa-audit-checkpoint\n{self.seq}\n{self.last}\n{self.hash}\n{self.at}"

    def signed(self, key: bytes) -> Checkpoint:
        """This checkpoint with its HMAC-SHA256 under `key`."""
        mac = hmac.new(key, self.payload().encode(), hashlib.sha256).hexdigest()
        return Checkpoint(self.seq, self.last, self.hash, self.at, mac)

    def signed_by(self, keys: Sequence[bytes]) -> bool:
        """Whether one of `keys` made the signature (each tried, in constant time)."""
        wanted = [hmac.new(k, self.payload().encode(), hashlib.sha256).hexdigest()
                  for k in keys]
        matched = [hmac.compare_digest(self.signature, w) for w in wanted]
        return bool(self.signature) and any(matched)

    def fields(self) -> dict[str, str]:
        """As stored, and as published."""
        return {k: str(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_fields(fields: dict[str, str]) -> Checkpoint:
        """From the checkpoints stream; ValueError when a field is missing."""
        try:
            return Checkpoint(int(fields["seq"]), fields["last"], fields["hash"],
                              fields["at"], fields.get("signature", ""))
        except KeyError as exc:
            raise ValueError(f"no field {exc}") from exc
