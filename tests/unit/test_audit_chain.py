"""The audit chain's arithmetic: exact hashes (a change of format would orphan every chain
already written), how entries are cut into links, and checkpoint signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

from coordinator.audit.chain import (
    GENESIS,
    RUN_MAX,
    Checkpoint,
    Entry,
    IncidentLink,
    Link,
    digest,
    incident_hash,
    is_bulk,
    runs,
)
from coordinator.audit.sealer import _due_checkpoint


def entry(n: int, action: str, incident: str | None = None) -> Entry:
    return Entry(f"1700000000000-{n}", json.dumps({"action": action, "incident_id": incident}))


def test_digest_and_link_hash_are_fixed() -> None:
    one = Entry("1-0", '{"action":"incident.opened"}')
    # The formats, spelled out: what an outside verifier would recompute.
    assert digest([one]) == hashlib.sha256(b'1-0\n{"action":"incident.opened"}\n').hexdigest()
    assert digest([one]) == "eff70b046584b9ce0cd70d07a6fed2b10cd3c2919ee470fefa0910cc0656e22f"
    link = Link.seal(1, [one], GENESIS)
    assert link.hash == "c13b51ce8264ead1df0c653f8e85fe9e3b5e48531817131353702d2ccde6ed50"
    assert link.hash == hashlib.sha256(
        f"loa-audit-link\n{GENESIS}\n1\n1-0\n1-0\n1\n{link.digest}".encode()).hexdigest()
    assert (incident_hash(GENESIS, link.digest)
            == "0e210015042fcd1479e0a6523cc541d3ec58bafbfe5620e99b77079e7cff7e43")
    assert (link.seq, link.first, link.last, link.count, link.prev) == (1, "1-0", "1-0", 1,
                                                                        GENESIS)
    assert link.hash == link.recomputed()
    assert Link.from_fields(link.fields()) == link
    assert link.fields() == {"seq": "1", "first": "1-0", "last": "1-0", "count": "1",
                             "digest": link.digest, "prev": GENESIS, "hash": link.hash}
    assert list(link.fields()) == [f.name for f in dataclasses.fields(Link)]  # every field


def test_a_change_anywhere_changes_the_hash() -> None:
    one, other = Entry("1-0", '{"a":1}'), Entry("1-0", '{"a":2}')
    assert Link.seal(1, [one], GENESIS).hash != Link.seal(1, [other], GENESIS).hash
    assert Link.seal(1, [one], GENESIS).hash != Link.seal(2, [one], GENESIS).hash
    assert Link.seal(1, [one], GENESIS).hash != Link.seal(1, [one], "1" * 64).hash
    assert digest([Entry("1-0", "x")]) != digest([Entry("1-1", "x")])
    assert incident_hash(GENESIS, "a") != incident_hash(GENESIS, "b")


def test_statement_deliveries_run_together_and_everything_else_alone() -> None:
    entries = [entry(1, "report.accepted", "INC-1"), entry(2, "delivery.sent"),
               entry(3, "delivery.failed"), entry(4, "delivery.sent", "INC-1"),
               entry(5, "delivery.sent"), entry(6, "approval.approved", "INC-1"),
               entry(7, "delivery.sent")]
    assert [[e.id[-1] for e in run] for run in runs(entries)] == [
        ["1"], ["2", "3"], ["4"], ["5"], ["6"], ["7"]]
    assert is_bulk(entry(1, "delivery.sent")) and not is_bulk(entry(1, "delivery.sent", "I"))
    assert not is_bulk(Entry("1-0", "not json"))


def test_a_run_holds_at_most_run_max_entries() -> None:
    many = [entry(n, "delivery.sent") for n in range(RUN_MAX * 2 + 1)]
    assert [len(run) for run in runs(many)] == [RUN_MAX, RUN_MAX, 1]


def test_incident_links_read_back() -> None:
    link = IncidentLink("1-0", "d" * 64, "h" * 64)
    assert IncidentLink.parse(link.text()) == link


def test_checkpoints_verify_only_with_our_key_and_unchanged() -> None:
    made = Checkpoint(7, "5-0", "a" * 64, "2026-12-03T10:00:00+00:00").signed(b"k1")
    assert made.signed_by([b"k0", b"k1"])
    assert not made.signed_by([b"k2"])
    changed = Checkpoint(made.seq, made.last, "b" * 64, made.at, made.signature)
    assert not changed.signed_by([b"k1"])
    assert not Checkpoint(7, "5-0", "a" * 64, made.at).signed_by([b"k1"])
    assert Checkpoint.from_fields(made.fields()) == made


def test_a_checkpoint_is_due_after_its_interval_and_only_when_the_chain_moved() -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    link = Link.seal(3, [Entry("9-0", "{}")], "f" * 64)
    fresh = {"seq": "2", "hash": "f" * 64, "last": "8-0", "checkpoint_at":
             str(now.timestamp() - 10), "checkpoint_seq": "1"}
    assert _due_checkpoint(fresh, [link], b"k", now, 60) is None
    due = _due_checkpoint(fresh, [link], b"k", now, 5)
    assert due is not None and (due.seq, due.last, due.hash) == (3, "9-0", link.hash)
    assert due.signed_by([b"k"])
    idle = {**fresh, "checkpoint_seq": "2"}
    assert _due_checkpoint(idle, [], b"k", now, 5) is None  # nothing new since
    moved = _due_checkpoint(fresh, [], b"k", now, 5)
    assert moved is not None and (moved.seq, moved.hash) == (2, "f" * 64)
    assert _due_checkpoint({}, [], b"k", now, 5) is None  # nothing sealed yet
