"""The keys of Loa's operations: the audit trail and its seal, the processes' heartbeats,
dead letters, and the layout of the data. How long each lives is said as in
:mod:`coordinator.keys`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperationKeys:
    """The operations' key names under one prefix; :class:`coordinator.keys.Keys` adds the
    flow's."""

    prefix: str

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # the audit trail
    def audit(self) -> str:
        """Stream of every audit event. Kept, uncapped, on purpose: it is the record (a
        timeline has an incident's share only; a cap would soon evict the approvals behind
        a fan-out's entries). Archiving it (export, then XTRIM MINID) is the operator's."""
        return self._k("audit")

    def audit_links(self) -> str:
        """Stream of the audit chain's links, oldest first: each seals the next entries (one,
        or a run of a statement's deliveries) with the hash of the link before it. Kept;
        pruned only with the audit stream, up to a checkpoint (`loa audit prune`)."""
        return self._k("audit", "links")

    def audit_head(self) -> str:
        """Hash: the chain's newest link (seq, hash, the last audit entry it sealed) and
        when the last checkpoint was made. Kept: one per installation."""
        return self._k("audit", "head")

    def audit_sealer(self) -> str:
        """Present while `loa scheduler` seals the audit trail (the workers then leave it to
        it): set after each batch it sealed. Expires: 5 s after (audit.sealer)."""
        return self._k("audit", "sealer")

    def audit_checkpoints(self) -> str:
        """Stream of signed checkpoints of the chain (seq, hash, when), published at
        /audit/head. Kept: a few hundred bytes each, one per LOA_AUDIT_CHECKPOINT_S at
        most, and only while something is audited."""
        return self._k("audit", "checkpoints")

    def incident_chain(self, incident_id: str) -> str:
        """List, parallel to the incident's timeline: `ENTRY_ID DIGEST HASH` per sealed
        entry, each hash chaining the one before (coordinator.audit). Kept: the record."""
        return self._k("incident", incident_id, "chain")

    def incident_chains(self) -> str:
        """Pattern matching every incident's chain."""
        return self._k("incident", "*", "chain")

    # the processes, and what they could not do
    def worker_heartbeat(self, worker_id: str) -> str:
        """Present while a worker of that id works, its stop included; 10 s after a beat."""
        return self._k("worker", worker_id)

    def scheduler_heartbeat(self) -> str:
        """Present while `loa scheduler` is alive. Expires: 10 s after its beat."""
        return self._k("scheduler")

    def worker_heartbeats(self) -> str:
        """Pattern matching every worker heartbeat key."""
        return self._k("worker", "*")

    def dead_letters(self) -> str:
        """Stream of dead letters (also on the dead-letters topic). Capped: MAXLEN ~100 000
        (the topic keeps them too)."""
        return self._k("dead-letters")

    def dead_letters_seen(self) -> str:
        """The last dead letter's id seen by an operator (`loa doctor`). Kept."""
        return self._k("dead-letters", "seen")

    # the layout of all of the above, and the area map its codes are of
    def layout_version(self) -> str:
        """The version of the layout these keys are in (coordinator/migrations): absent on
        data written before versions were kept (version 1) and on an empty Redis. Kept;
        changed only by `loa migrate`, or stamped by the first process on an empty Redis."""
        return self._k("layout", "version")

    def area_map(self) -> str:
        """The area map the data's area codes are of (coordinator.migrations.area_map).
        Kept; changed by `loa areas migrate`, stamped by the first process."""
        return self._k("areas", "map")
