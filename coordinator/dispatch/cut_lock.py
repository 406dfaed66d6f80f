"""The right to cut a statement's audience into chunks, as its holder uses it.

The lock (``Keys.dispatch_lock``, taken by ``ledger.lock_and_read``) names its holder,
`worker/instance`; another worker takes it once it has run out, or once the holder's
heartbeat is gone. A holder that stalled past that, and came back, must not write the
ledger under the new holder (counting a chunk twice, reopening a finished fan-out). So
each write of the cutting (the resolution, a chunk, the end of cutting) is made as the
holder: checked under WATCH of the lock, with the ledger read, unless the hold is *sure*.
It is sure for as long as no other worker can have taken the lock: while this holder's
heartbeat, as read when it took the lock, and the lock itself cannot have run out (less
:data:`SURE_MARGIN_S`). A fan-out is cut within a second or so, so its writes are
mostly one round trip each; only a cutter that waited long (for the broker) pays the
check. What this does not cover: two processes run under one `LOA_WORKER_ID` (refused at
start, logged at each beat when they started together), and a jump of Redis's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator.dispatch.ledger import LOCK_TTL_MS
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, transact

SURE_MARGIN_S = 1.0
"""Taken off the time a hold is sure: clocks, and the round trip that read it."""
FIELDS = ("resolved", "finished_at", "chunks", "queued_all")
"""What a check reads of the ledger (see :data:`Refuse`)."""

Refuse = Callable[[str | None, dict[str, str]], bool]
"""Whether to refuse a write, given who holds the lock (None: nobody, it ran out) and the
ledger's :data:`FIELDS` (those set)."""


@dataclass(frozen=True)
class Hold:
    """This cutter's hold of the lock: who it is, and until when (monotonic) it is sure."""

    holder: str
    sure_until: float

    @classmethod
    def taken(cls, holder: str, heartbeat_left_ms: int, asked_at: float) -> Hold:
        """The hold taken by a holder whose heartbeat had `heartbeat_left_ms` to run (0: not
        this holder's, or none) when it asked for the lock at `asked_at` (monotonic,
        before the round trip: the window is not stretched by a late reply)."""
        window = min(heartbeat_left_ms, LOCK_TTL_MS) / 1000 - SURE_MARGIN_S
        return cls(holder, asked_at + max(0.0, window))

    def sure(self) -> bool:
        """Whether no other worker can have taken the lock yet."""
        return time.monotonic() < self.sure_until

    def refuses(self, held: str | None) -> bool:
        """Whether the lock, held by `held`, is another's (None: ran out, this one's to
        take back)."""
        return held not in (None, self.holder)


async def as_holder(rt: Runtime, statement_id: str, hold: Hold,
                    queue: Callable[[Pipeline], None], refuse: Refuse) -> list[Any] | None:
    """Make `queue`'s writes in one transaction as the lock's holder, and renew the lock;
    their replies, or None when `refuse` (asked under WATCH of the lock, unless the hold is
    sure) says no. A lock that ran out and that nobody took is taken back."""
    lock = rt.keys.dispatch_lock(statement_id)
    async with rt.redis.pipeline(transaction=True) as pipe:
        # The connection first (the pool may make a write wait, and the window pass), then
        # whether the hold is still sure.
        pipe.connection = await rt.redis.connection_pool.get_connection()
        if hold.sure():
            queue(pipe)
            pipe.pexpire(lock, LOCK_TTL_MS)
            return list(await pipe.execute())[:-1]

    async def checked(pipe: Pipeline) -> bool:
        held = await pipe.get(lock)
        values = await pipe.hmget(rt.keys.dispatch(statement_id), list(FIELDS))
        if refuse(held, {f: v for f, v in zip(FIELDS, values, strict=True) if v is not None}):
            return False
        pipe.multi()
        queue(pipe)
        pipe.set(lock, hold.holder, px=LOCK_TTL_MS)
        return True

    replies: list[Any] = []
    return replies[:-1] if await transact(rt.redis, [lock], checked, replies=replies) else None
