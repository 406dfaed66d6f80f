"""A batch of a statement's deliveries on one channel: claimed in one script, handed over
several at once, recorded a few dozen at a time, and marked done in the dispatch ledger.

Per (statement, subscriber, channel) there is one delivery id, so one hand-over: a delivery
already final is not sent again, one another live worker is sending is left to it (the
batch is marked done once that worker has recorded it, else it stays open for the
recovery round), and one a dead worker left in `sending` is first looked for at the
provider (``dispatch.handover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.base import Channel
from coordinator.dispatch.fanout import deliveries_for, texts_of, unsubscribe_url
from coordinator.dispatch.handover import (
    FINAL,
    Outcome,
    claims_of,
    hand_over,
    queue_claim,
    queue_counts,
    queue_outcome,
    reason_not_to_send,
    release,
)
from coordinator.dispatch.ledger import settle
from coordinator.dispatch.provider_ids import queue_provider_ids
from coordinator.dispatch.status_callbacks import queue_take_early
from coordinator.events import DeliveryBatch, DeliveryRequest, Statement, utcnow
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, run_pipeline
from coordinator.subscribers import store
from coordinator.subscribers.store import queue_active

CONCURRENCY = 32
"""Deliveries of one batch with the channel at once (each waits its turn at the rate limit)."""
LEAD = 8
"""Deliveries of a batch read, claimed and handed over before the rest is read: a
statement's first messages leave within milliseconds of its publication, whatever the
batch's size."""
SLICE = 64
"""Deliveries read and claimed at a time after the lead."""
BUSY_WAIT_S = 2.0
"""How long a batch waits for the deliveries another live worker is handing over."""
FLUSH_EVERY_S = 0.02
"""How often outcomes are written: a crash loses at most this much bookkeeping (those
deliveries are then reconciled with the provider)."""
WITHDRAWN_EVERY_S = 0.25
"""How stale a batch's knowledge that its statement was withdrawn may be at a hand-over."""
LEAVERS_EVERY_S = 1.0
"""How stale its knowledge of who said STOP or left may be (one round trip for the whole
batch, its cost growing with the batch)."""

_running: set[tuple[str, str]] = set()  # batches this process is working on now


@dataclass
class BatchReport:
    """What one batch came to: counts per outcome, and whether it is done."""

    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False


async def deliver_batch(rt: Runtime, channels: dict[str, Channel], batch: DeliveryBatch,
                        now: datetime, cut: tuple[Statement, list[int]] | None = None
                        ) -> BatchReport:
    """Hand over every delivery of the batch not handed over yet; mark the batch done.
    `cut`: the statement and the batch's subscriber numbers, when its cutter hands it over
    itself (else they are read from Redis)."""
    name = f"{batch.channel}:{batch.number}"
    if (batch.statement_id, name) in _running:  # the same event twice here: one is enough
        return BatchReport()
    _running.add((batch.statement_id, name))
    try:
        return await _deliver(rt, channels, batch, name, now, cut)
    finally:
        _running.discard((batch.statement_id, name))


async def _deliver(rt: Runtime, channels: dict[str, Channel], batch: DeliveryBatch,
                   name: str, now: datetime, cut: tuple[Statement, list[int]] | None
                   ) -> BatchReport:
    loaded = await _load(rt, batch) if cut is None else cut
    if loaded is None:
        return BatchReport(done=True)  # done before, or the fan-out is finished
    statement, numbers = loaded
    channel = channels.get(batch.channel)
    report = BatchReport()
    gate = asyncio.Semaphore(CONCURRENCY)
    run = _Run(rt, batch.statement_id)

    busy: list[str] = []  # deliveries another live worker is handing over

    async def one(request: DeliveryRequest, claim: str) -> None:
        if claim in FINAL or claim == "busy":
            report.counts[claim] = report.counts.get(claim, 0) + 1
            if claim == "busy":
                busy.append(request.id)
            return
        if channel is None or run.unwanted.get(request.id):
            outcome = Outcome("skipped", run.unwanted.get(request.id)
                              or f"{batch.channel} is not configured")
        else:
            orphan, _, started = claim.partition("|")
            async with gate:
                try:
                    outcome = await hand_over(rt, channel, request, orphan=orphan == "orphan",
                                              started=started or None,
                                              wanted=run.wanted(request))
                except Exception:
                    await run.release([request])
                    raise
        run.record(request, outcome)
        report.counts[outcome.status] = report.counts.get(outcome.status, 0) + 1

    handing: list[asyncio.Task[None]] = []
    async with run.kept_up():
        try:
            # The lead is handed over while the rest is still being read and claimed.
            for part in _parts(numbers):
                requests = await _requests(rt, statement, part, batch.channel)
                # Who is not wanted any more, asked with the claim: nothing claimed idles.
                claims = await run.refresh_and_claim(requests, batch.channel, now)
                run.add(requests)
                handing += [asyncio.create_task(one(r, c))
                            for r, c in zip(requests, claims, strict=True)]
        finally:
            # Every hand-over under way ends here, even when one failed or reading the rest
            # did: one left running would be recorded by nobody and handed over again by
            # the batch's retry.
            ended = await asyncio.gather(*handing, return_exceptions=True)
    failed = next((e for e in ended if isinstance(e, BaseException)), None)
    if failed is not None:
        raise failed
    if not busy or await _ended(rt, busy):
        await settle(rt.redis, rt.keys, batch.statement_id, time.time(), done_batch=name,
                     batch_key=rt.keys.dispatch_batch(batch.statement_id, batch.channel,
                                                      batch.number))
        report.done = True
    return report


async def _ended(rt: Runtime, delivery_ids: list[str]) -> bool:
    """Whether the deliveries another worker was handing over (the same batch run twice at
    once, after a rebalance) reach a final status within :data:`BUSY_WAIT_S`: then this
    run marks the batch done, rather than the recovery round seconds later."""
    keys = [rt.keys.delivery(i) for i in delivery_ids]
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        async with rt.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "status")
            statuses = await pipe.execute()
        if all(status in FINAL for status in statuses):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def _parts(ids: list[int]) -> list[list[int]]:
    """The batch in the order it is read and claimed: the lead, then slices of
    :data:`SLICE` (each a short stretch of CPU, so the hand-overs already under way get their
    answers read in between). Pure."""
    return [ids[:LEAD], *(ids[n:n + SLICE] for n in range(LEAD, len(ids), SLICE))]


async def _load(rt: Runtime, batch: DeliveryBatch) -> tuple[Statement, list[int]] | None:
    """The batch's statement and subscriber numbers (None when there is nothing left to
    do)."""
    keys, sid = rt.keys, batch.statement_id
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.statement(sid), "statement")
        pipe.get(keys.dispatch_batch(sid, batch.channel, batch.number))
        pipe.hexists(keys.dispatch(sid), "finished_at")
        raw_statement, raw_ids, finished = await pipe.execute()
    if raw_ids is None or finished or raw_statement is None:
        return None
    return (Statement.model_validate_json(raw_statement),
            [int(i) for i in str(raw_ids).split(",") if i])


async def _requests(rt: Runtime, statement: Statement, numbers: list[int], channel: str
                    ) -> list[DeliveryRequest]:
    """The deliveries of these subscribers on the channel (one without a record any more
    gets none)."""
    if not numbers:
        return []
    link = f"{rt.settings.web_url()}/statements/{statement.id}"
    texts = texts_of(statement)
    requests = []
    for sub in (await store.load(rt.redis, rt.keys, numbers)).values():
        requests += deliveries_for(
            statement, sub, link, rt.city.languages,
            unsubscribe_url(rt, sub) if channel == "email" else None, only=channel, texts=texts)
    return requests


class _Run:
    """A batch being handed over: its outcomes, written every :data:`FLUSH_EVERY_S`, and
    which of its deliveries are not wanted any more (withdrawn, STOP, left), asked of Redis
    for the whole batch in one round trip now and then (:data:`WITHDRAWN_EVERY_S`,
    :data:`LEAVERS_EVERY_S`) rather than once per delivery."""

    def __init__(self, rt: Runtime, statement_id: str) -> None:
        self.rt = rt
        self.statement_id = statement_id
        self.waiting: dict[str, DeliveryRequest] = {}  # not handed over, skipped or final yet
        self.unwanted: dict[str, str] = {}  # delivery id -> why
        self.outcomes: list[tuple[DeliveryRequest, Outcome]] = []
        self.recorded = 0
        self.wake = asyncio.Event()  # the ticker's: write now

    def wanted(self, request: DeliveryRequest) -> Callable[[], Awaitable[bool]]:
        """The channel's last question before the hand-over (answered from memory)."""
        async def ask() -> bool:
            return request.id not in self.unwanted
        return ask

    def add(self, requests: list[DeliveryRequest]) -> None:
        """Deliveries claimed for this run, to be handed over."""
        self.waiting |= {r.id: r for r in requests}

    def record(self, request: DeliveryRequest, outcome: Outcome) -> None:
        """Keep an outcome for the next write."""
        self.waiting.pop(request.id, None)
        self.outcomes.append((request, outcome))
        self.recorded += 1
        if self.recorded == 1:  # the batch's first outcome is written at once
            self.wake.set()

    async def refresh(self, withdrawn_only: bool = False) -> None:
        """Ask Redis which waiting deliveries are not wanted any more: whether the statement
        was withdrawn (one HEXISTS), and unless `withdrawn_only`, who said STOP or left."""
        waiting = list(self.waiting.values())
        if not waiting:
            return
        keys = self.rt.keys
        if withdrawn_only:
            if await self.rt.redis.hexists(keys.dispatch(self.statement_id), "withdrawn_at"):
                self.unwanted |= {r.id: "statement withdrawn" for r in waiting}
            return
        self._note_unwanted(waiting, *await run_pipeline(
            self.rt.redis, lambda pipe: self._queue_refresh(pipe, waiting)))

    async def refresh_and_claim(self, requests: list[DeliveryRequest], channel: str,
                                now: datetime) -> list[str]:
        """:meth:`refresh` for `requests`, and their claims (``handover.claim``), in one
        round trip."""
        if not requests:
            return []

        def fill(pipe: Pipeline) -> None:
            self._queue_refresh(pipe, requests)
            queue_claim(pipe, self.rt, requests, channel, now)

        opted_out, active, withdrawn, claimed = await run_pipeline(self.rt.redis, fill)
        self._note_unwanted(requests, opted_out, active, withdrawn)
        return claims_of(claimed)

    def _queue_refresh(self, pipe: Pipeline, waiting: list[DeliveryRequest]) -> None:
        keys = self.rt.keys
        pipe.smismember(keys.opted_out("sms"), [r.recipient for r in waiting])
        queue_active(pipe, keys, [r.subscriber_id or "" for r in waiting])
        pipe.hexists(keys.dispatch(self.statement_id), "withdrawn_at")

    def _note_unwanted(self, waiting: list[DeliveryRequest], opted_out: list[Any],
                       active: list[Any], withdrawn: Any) -> None:
        for r, out, on in zip(waiting, opted_out, active, strict=True):
            why = reason_not_to_send(r, bool(out), bool(on), bool(withdrawn))
            if why:
                self.unwanted[r.id] = why

    async def flush(self) -> None:
        """Write the outcomes kept so far."""
        taken = self.outcomes[:]
        del self.outcomes[:len(taken)]
        if taken:
            try:
                await _write(self.rt, self.statement_id, taken)
            except Exception:
                await self.release([r for r, _ in taken])
                raise

    async def release(self, requests: list[DeliveryRequest]) -> None:
        """Give up the claims of deliveries whose hand-over or record failed: whichever
        worker runs the batch again looks for them at the provider (``handover.release``),
        rather than finding them busy for as long as this worker lives."""
        with contextlib.suppress(Exception):  # Redis away: they stay this worker's
            await release(self.rt, requests)

    @contextlib.asynccontextmanager
    async def kept_up(self) -> AsyncIterator[None]:
        """While the block runs, write outcomes and refresh the wanted view now and then;
        write what is left when it ends."""
        stop = asyncio.Event()

        async def tick() -> None:
            # Never cancelled mid-write (a write cut off would lose its outcomes): told to
            # stop, it writes what is left and ends.
            checked = left_checked = time.monotonic()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), FLUSH_EVERY_S)
                self.wake.clear()
                await self.flush()
                now = time.monotonic()
                if now - left_checked >= LEAVERS_EVERY_S:
                    await self.refresh()
                    checked = left_checked = now
                elif now - checked >= WITHDRAWN_EVERY_S:
                    await self.refresh(withdrawn_only=True)
                    checked = now

        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            stop.set()
            self.wake.set()
            try:
                await asyncio.shield(ticker)  # a second cancel must not cut a write off
            finally:
                # An outcome recorded while the ticker's last round was refreshing (after
                # its flush) is written here: the batch is settled right after this, and
                # nothing would come back for a delivery left in `sending`. So are those
                # recorded after the ticker failed (its flush or refresh raised): written,
                # or given up (see flush) if Redis still fails.
                await self.flush()


async def _write(rt: Runtime, statement_id: str,
                 outcomes: list[tuple[DeliveryRequest, Outcome]]) -> None:
    """Record outcomes in one transaction: each delivery's record, counter and audit entry,
    and the provider ids with them, so a status callback that finds a delivery by its
    provider id finds its record written (one that came between the two, when the ids went
    first, counted the delivery twice). A callback that came before (kept as early) is
    taken and applied in the same transaction."""
    pairs = {o.provider_id: r.id for r, o in outcomes if o.provider_id}
    now = utcnow()
    counts: Counter[tuple[str, str]] = Counter()
    async with rt.redis.pipeline(transaction=True) as pipe:
        for request, outcome in outcomes:
            queue_outcome(pipe, rt, request, outcome, now, counts)
        queue_counts(pipe, counts)
        pipe.hset(rt.keys.dispatch(statement_id), "progress_at", time.time())
        queue_provider_ids(pipe, rt.keys, pairs)
        queue_take_early(pipe, rt.keys, pairs, now)
        await pipe.execute()
