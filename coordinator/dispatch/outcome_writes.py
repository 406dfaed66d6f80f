"""The outcomes of the batches a worker hands over, written together.

Every batch run (``dispatch.batch_run``) keeps its outcomes and writes them every
:data:`FLUSH_EVERY_S`, its clock aligned with every other run's (:func:`next_tick`); the
runs' writes then go to Redis as one transaction (:class:`OutcomeWrites`) rather than one
each. A fan-out has about eight batches under way per channel: they had made about 200
writes a second of a few outcomes each, each write's round trip and packing paid again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from coordinator.dispatch.handover import Outcome, count_outcome, outcome_record, queue_counts
from coordinator.dispatch.provider_ids import PROVIDER_IDS_KEPT_S, callback_id
from coordinator.dispatch.status_callbacks import queue_take_early
from coordinator.dispatch.status_sweep import first_ask_at, unconfirmed
from coordinator.errors import LoaError
from coordinator.events import DeliveryRequest, utcnow
from coordinator.runtime import Runtime

FLUSH_EVERY_S = 0.02
"""How often outcomes are written: a crash loses about this much bookkeeping, plus a write
under way (those deliveries are then reconciled with the provider)."""
MOST = 2000
"""Outcomes written in one transaction at most (the rest go in the next, at once)."""

Outcomes = list[tuple[DeliveryRequest, Outcome]]


def next_tick(now: float) -> float:
    """The first moment after `now` (the event loop's clock) on the write clock every batch
    run shares: a multiple of :data:`FLUSH_EVERY_S`. Pure."""
    tick = (math.floor(now / FLUSH_EVERY_S) + 1) * FLUSH_EVERY_S
    return tick if tick > now else tick + FLUSH_EVERY_S  # (0.06 / 0.02 is 2.999…)


class OutcomesNotWritten(LoaError):
    """The outcome writer was stopped (cancelled) before it had written these outcomes:
    their run gives their claims up, as after any failed write."""


class OutcomeWrites:
    """The outcome writes of one worker's batch runs: whatever runs ask to write while a
    transaction is being written goes in the next one, so one run alone writes at once, and
    runs on the same clock write together. One per worker (``pipeline.Pipeline``); a batch
    run made without one has its own."""

    def __init__(self, rt: Runtime, most: int = MOST) -> None:
        self.rt, self.most = rt, most
        self._waiting: list[tuple[Outcomes, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None
        self.transactions = 0  # tried so far (outcomes / transactions: what grouping saves)

    async def write(self, outcomes: Outcomes) -> None:
        """Write `outcomes` with whatever else is waiting; returns once they are written.
        Raises what the write raised, for every run whose outcomes were in the transaction
        (only this run's, when its own outcomes could not be made into records). A caller
        cancelled meanwhile does not cut the write off."""
        if not outcomes:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcomes, done))
        if self._writing is None:
            # Its first step runs after every task woken with this one (the runs' tickers,
            # on one clock) has had its turn and joined.
            self._writing = asyncio.create_task(self._write_waiting())
        await asyncio.shield(done)

    async def _write_waiting(self) -> None:
        taken: list[tuple[Outcomes, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                taken = self._take()
                now = utcnow()
                rows: list[Rows] = []
                for outcomes, done in taken:
                    try:
                        rows.append(_rows(self.rt, outcomes, now))
                    except Exception as exc:  # this run's own: the others are written
                        _fail(done, exc)
                self.transactions += bool(rows)
                try:
                    await _write(self.rt, rows, now)
                except Exception as exc:  # each run answers with the error
                    for _, done in taken:
                        _fail(done, exc)
                    continue
                for _, done in taken:
                    if not done.done():
                        done.set_result(None)
        except BaseException:
            # Cancelled (the loop's end) mid-write: every run still waiting hears it, and
            # gives its claims up, rather than waiting for good.
            for _, done in [*taken, *self._waiting]:
                _fail(done, OutcomesNotWritten("the outcome writer was stopped"))
            self._waiting.clear()
            raise
        finally:
            self._writing = None

    def _take(self) -> list[tuple[Outcomes, asyncio.Future[None]]]:
        """The waiting writes of the next transaction: at least one, at most :attr:`most`
        outcomes after the first."""
        taken = [self._waiting.pop(0)]
        count = len(taken[0][0])
        while self._waiting and count + len(self._waiting[0][0]) <= self.most:
            taken.append(self._waiting.pop(0))
            count += len(taken[-1][0])
        return taken


def _fail(done: asyncio.Future[None], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)
        done.exception()  # retrieved, should its run be gone


# KEYS[1]: the audit stream, KEYS[2]: the SMS awaiting their final status. ARGV: the prefix
# of a delivery's key (Keys.delivery("")) and of a provider id's (Keys.provider_message("")),
# how long a provider id is kept (s), when to ask the provider about the unconfirmed, the
# number F of a record's fields and their names; then per delivery its id, its provider id
# ('' for none), its audit entry (JSON), '1' when it awaits its final status, and its F
# values. Each delivery's record, audit entry, provider id and wait for its status, as
# `handover.queue_outcome` and `queue_provider_ids` write them, in one command: a batch's
# outcomes cost one round trip's packing, not five commands each.
_RECORD = """
local f = tonumber(ARGV[5])
local i = 6 + f
local fields = {}
while i <= #ARGV do
  local id, pid = ARGV[i], ARGV[i + 1]
  for j = 1, f do
    fields[2 * j - 1] = ARGV[5 + j]
    fields[2 * j] = ARGV[i + 3 + j]
  end
  redis.call('HSET', ARGV[1] .. id, unpack(fields))
  redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 2])
  if pid ~= '' then redis.call('SET', ARGV[2] .. pid, id, 'EX', ARGV[3]) end
  if ARGV[i + 3] == '1' then redis.call('ZADD', KEYS[2], ARGV[4], id) end
  i = i + 4 + f
end
return 0
"""


@dataclass
class Rows:
    """One run's outcomes as the transaction writes them (:func:`_rows`)."""

    names: list[str]  # a delivery record's fields
    rows: list[str]  # _RECORD's arguments of each delivery in turn
    counts: Counter[tuple[str, str]]  # by ledger key and column
    pairs: dict[str, str]  # provider id -> delivery id
    statements: list[str]


def _rows(rt: Runtime, outcomes: Outcomes, now: datetime) -> Rows:
    """Each delivery's record, audit entry (JSON), counts and provider id, as :func:`_write`
    writes them."""
    made = Rows([], [], Counter(), {callback_id(r.channel, o.provider_id): r.id
                                    for r, o in outcomes if callback_id(r.channel, o.provider_id)},
                list(dict.fromkeys(r.statement_id or "-" for r, _ in outcomes)))
    for request, outcome in outcomes:
        record, event = outcome_record(rt, request, outcome, now)
        made.names = made.names or list(record)
        count_outcome(rt, request, outcome, made.counts)
        awaits = unconfirmed(request.channel, outcome.status, outcome.provider_id)
        made.rows += [request.id, callback_id(request.channel, outcome.provider_id),
                      event.model_dump_json(),
                      "1" if awaits else "", *(record[n] for n in made.names)]
    return made


async def _write(rt: Runtime, made: list[Rows], now: datetime) -> None:
    """Record outcomes in one transaction: each delivery's record, counter and audit entry,
    and the provider ids with them, so a status callback that finds a delivery by its
    provider id finds its record written (one that came between the two, when the ids went
    first, counted the delivery twice). A callback that came before (kept as early) is
    taken and applied in the same transaction. SMS without a final status yet wait for it
    (``status_sweep``). The script goes with its text (EVAL), as the early callbacks' does:
    a Redis that lost it since cannot fail it inside the transaction. The outcomes are of
    statements' deliveries (of one or several statements), whose audit entries stay out of
    incident timelines (``handover.outcome_record``)."""
    if not made:
        return
    names = made[0].names  # every record has the same fields
    counts: Counter[tuple[str, str]] = sum((m.counts for m in made), Counter())
    keys = rt.keys
    progress_at = time.time()
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.eval(_RECORD, 2, keys.audit(), keys.unconfirmed(), keys.delivery(""),
                  keys.provider_message(""), PROVIDER_IDS_KEPT_S,
                  first_ask_at(rt), len(names), *names, *(x for m in made for x in m.rows))
        queue_counts(pipe, counts)
        for statement_id in dict.fromkeys(s for m in made for s in m.statements):
            pipe.hset(keys.dispatch(statement_id), "progress_at", progress_at)
        queue_take_early(pipe, keys, {p: d for m in made for p, d in m.pairs.items()}, now)
        await pipe.execute()
