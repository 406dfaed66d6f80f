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
import time
from dataclasses import dataclass, field
from datetime import datetime

from channels.base import Channel
from coordinator.dispatch.batch_run import BatchRun
from coordinator.dispatch.fanout import deliveries_for, texts_of, unsubscribe_url
from coordinator.dispatch.handover import FINAL, Outcome, hand_over
from coordinator.dispatch.ledger import settle
from coordinator.dispatch.outcome_writes import OutcomeWrites
from coordinator.dispatch.stopping import Stopping
from coordinator.events import DeliveryBatch, DeliveryRequest, Statement
from coordinator.runtime import Runtime
from coordinator.subscribers import store

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

_running: set[tuple[str, str]] = set()  # batches this process is working on now


@dataclass
class BatchReport:
    """What one batch came to: counts per outcome, and whether it is done."""

    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False
    left: int = 0
    """What the worker's stop left of the batch (the batch is not done): deliveries given
    back, and subscribers not read yet."""
    held: bool = False
    """Cut off or not started by a stop or a rebalance (:class:`Stopping`): the rest of the
    batch is for whichever worker runs it next."""


async def deliver_batch(rt: Runtime, channels: dict[str, Channel], batch: DeliveryBatch,
                        now: datetime, cut: tuple[Statement, list[int]] | None = None,
                        stopping: Stopping | None = None,
                        writes: OutcomeWrites | None = None) -> BatchReport:
    """Hand over every delivery of the batch not handed over yet; mark the batch done.
    `cut`: the statement and the batch's subscriber numbers, when its cutter hands it over
    itself (else they are read from Redis). Once `stopping` begins, nothing more is handed
    over (see :class:`Stopping`), and the batch is left for another run. `writes`: the
    worker's, which writes the outcomes of its batches under way together."""
    name = f"{batch.channel}:{batch.number}"
    if (batch.statement_id, name) in _running:  # the same event twice here: one is enough
        return BatchReport()
    stopping = stopping or Stopping()
    if stopping.holding:
        return BatchReport(held=True)
    run = BatchRun(rt, batch.statement_id, writes)
    _running.add((batch.statement_id, name))
    stopping.runs.add(run)
    try:
        return await _deliver(rt, channels, batch, name, now, cut, run)
    finally:
        stopping.runs.discard(run)
        _running.discard((batch.statement_id, name))


async def _deliver(rt: Runtime, channels: dict[str, Channel], batch: DeliveryBatch,
                   name: str, now: datetime, cut: tuple[Statement, list[int]] | None,
                   run: BatchRun) -> BatchReport:
    loaded = await _load(rt, batch) if cut is None else cut
    if loaded is None:
        return BatchReport(done=True)  # done before, or the fan-out is finished
    statement, numbers = loaded
    channel = channels.get(batch.channel)
    report = BatchReport()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(request: DeliveryRequest, claim: str) -> None:
        if claim in FINAL or claim == "busy":  # busy: another live worker is handing it over
            report.counts[claim] = report.counts.get(claim, 0) + 1
            return
        if channel is None or run.unwanted.get(request.id):
            outcome = Outcome("skipped", run.unwanted.get(request.id)
                              or f"{batch.channel} is not configured")
        else:
            orphan, _, started = claim.partition("|")
            # A fresh claim was made at `now`: a retry looks at the provider from then.
            started = started or ("" if orphan == "orphan" else now.isoformat())
            async with gate:
                try:
                    outcome = await hand_over(rt, channel, request, orphan=orphan == "orphan",
                                              started=started or None,
                                              wanted=run.wanted(request),
                                              sleep=run.backoff(request))
                except Exception:
                    await run.release([request])
                    raise
        run.record(request, outcome)
        report.counts[outcome.status] = report.counts.get(outcome.status, 0) + 1

    async with run.kept_up():
        try:
            # The lead is handed over while the rest is still being read and claimed.
            for part in run.until_stopped(_parts(numbers)):
                requests = await _requests(rt, statement, part, batch.channel)
                # Who is not wanted any more, asked with the claim: nothing claimed idles.
                claims = await run.refresh_and_claim(requests, batch.channel, now)
                run.hand(requests, claims, one)
        finally:
            # Every hand-over under way ends here, even when one failed or reading the rest
            # did: one left running would be recorded by nobody and handed over again by
            # the batch's retry.
            ended = await asyncio.gather(*run.handing.values(), return_exceptions=True)
    failed = run.failure(ended)
    if failed is not None:
        raise failed
    if run.cut or run.unread:  # the worker stops: the rest is for whichever runs it next
        report.left, report.held = len(run.cut) + run.unread, True
        return report
    busy = run.claimed("busy")
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


