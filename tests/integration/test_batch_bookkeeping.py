"""A batch's bookkeeping on a real redis-server: every outcome recorded while the batch runs
reaches the delivery's record, including one recorded while the writer's last round was busy
asking Redis who left (the race that once left a handed-over SMS in `sending` for good); a
big batch's first deliveries are handed over before the rest is read; and a fan-out's first
batches are handed over by the publishing worker itself, without a hop through their lane."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from datetime import datetime
from typing import Any

import pytest

from channels.base import OutboundMessage, Receipt, TransientDeliveryError, still_wanted
from channels.twilio_webhooks import StatusUpdate
from coordinator import outbox, topics
from coordinator.at_once import AtOnce
from coordinator.dispatch import batch_run, batches, deliveries, fanout, outcome_writes
from coordinator.dispatch import stopping as stopping_module
from coordinator.dispatch.deliveries import deliver, keep_delivery
from coordinator.dispatch.fanout import Send, fan_out
from coordinator.dispatch.handover import Outcome, claim
from coordinator.dispatch.ledger import Ledger, settle
from coordinator.dispatch.recovery import Recovered, recover
from coordinator.dispatch.status_callbacks import record_statuses
from coordinator.dispatch.stopping import Stopping
from coordinator.events import DeliveryBatch, DeliveryRequest, RenderedText, Statement, utcnow
from coordinator.model.incident import Incident, IncidentStatus, Severity
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime
from coordinator.statements.approved import statement_message_id
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import canonical_id, queue_write

pytestmark = pytest.mark.integration


class _HeldRefresh(batch_run.BatchRun):
    """A batch whose refreshes wait until the test lets them go, so that an outcome can be
    recorded exactly while the writer's round is between its flush and its next check."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.refreshing = asyncio.Event()
        self.release = asyncio.Event()

    async def refresh(self, withdrawn_only: bool = False) -> None:
        self.refreshing.set()
        await self.release.wait()
        await super().refresh(withdrawn_only)


async def test_an_outcome_recorded_during_the_last_refresh_is_written(rt: Runtime) -> None:
    request = DeliveryRequest(id="d-1", channel="sms", recipient="+84900000001", text="x",
                              purpose="statement", statement_id="S-1", subscriber_id="sub-1")
    await rt.redis.hset(rt.keys.delivery(request.id), mapping={"status": "sending"})
    run = _HeldRefresh(rt, "S-1")
    run.add([request])
    async with run.kept_up():
        await asyncio.wait_for(run.refreshing.wait(), 5)  # the writer's round is in refresh
        run.record(request, Outcome("sent", "", provider_id="SM1"))
        asyncio.get_running_loop().call_later(0.05, run.release.set)
    record = await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert record["status"] == "sent"
    assert record["provider_id"] == "SM1"
    assert await rt.redis.hget(rt.keys.dispatch("S-1"), "sms:sent") == "1"


async def execs(rt: Runtime) -> int:
    """How many transactions (EXEC) this Redis has run so far."""
    return int((await rt.redis.info("commandstats")).get("cmdstat_exec", {}).get("calls", 0))


async def test_outcomes_and_provider_ids_are_one_transaction_and_take_early_callbacks(
        rt: Runtime) -> None:
    """A batch's outcomes are written with their provider ids in one MULTI (a callback that
    finds a delivery by its id finds its record), and the callbacks that came before the
    sends were recorded (kept as early) are taken and applied there, strictly forward:
    `delivered` over `queued` (counted once as sent, once as delivered), `undelivered` with
    its error code, but not `accepted` over `queued`, nor `sent` over a reconciled
    `delivered`."""
    requests = [DeliveryRequest(id=f"d-{n}", channel="sms", recipient=f"+8490000000{n}",
                                text="x", purpose="statement", statement_id="S-2",
                                subscriber_id=f"sub-{n}") for n in (1, 2, 3, 4)]
    for r in requests:
        await rt.redis.hset(rt.keys.delivery(r.id), mapping={"status": "sending"})
    await record_statuses(rt.redis, rt.keys, [  # before the sends are recorded: kept
        StatusUpdate("SM1", "undelivered", "30003"), StatusUpdate("SM2", "delivered", ""),
        StatusUpdate("SM3", "accepted", ""), StatusUpdate("SM4", "sent", "")], utcnow())
    before = await execs(rt)
    run = batch_run.BatchRun(rt, "S-2")
    run.add(requests)
    async with run.kept_up():
        for n, r in enumerate(requests, 1):  # all before the writer runs: one write
            run.record(r, Outcome("delivered" if n == 4 else "queued", "",
                                  provider_id=f"SM{n}"))
    assert await execs(rt) - before == 1
    assert [await rt.redis.hget(rt.keys.delivery(r.id), "status") for r in requests] == [
        "undelivered", "delivered", "queued", "delivered"]
    assert await rt.redis.hget(rt.keys.delivery("d-1"), "error_code") == "30003"
    assert [await rt.redis.get(rt.keys.provider_message(f"SM{n}")) for n in (1, 2, 3, 4)] == [
        "d-1", "d-2", "d-3", "d-4"]
    assert await rt.redis.hlen(rt.keys.early_callbacks()) == 0  # each taken, applied or not
    ledger = await rt.redis.hgetall(rt.keys.dispatch("S-2"))
    assert (ledger["sms:sent"], ledger["sms:delivered"], ledger["sms:failed"]) == (
        "4", "2", "1")
    record = await rt.redis.hgetall(rt.keys.delivery("d-3"))
    assert {k: record[k] for k in ("channel", "to", "provider_id", "error", "statement_id")
            } == {"channel": "sms", "to": "sub-3", "provider_id": "SM3", "error": "",
                  "statement_id": "S-2"}
    # Only d-3 still awaits its final status (d-1 and d-2 took theirs early, d-4 was found
    # delivered); one audit entry a delivery, in the order written.
    assert await rt.redis.zrange(rt.keys.unconfirmed(), 0, -1) == ["d-3"]
    audited = [json.loads(fields["event"]) for _, fields in
               await rt.redis.xrange(rt.keys.audit())]
    assert [(e["action"], e["subject"], e["detail"]["to"]) for e in audited] == [
        ("delivery.queued", "d-1", "sub-1"), ("delivery.queued", "d-2", "sub-2"),
        ("delivery.queued", "d-3", "sub-3"), ("delivery.delivered", "d-4", "sub-4")]


async def test_the_batches_of_a_worker_write_their_outcomes_together(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batches (two statements) whose outcomes are due at once share one transaction,
    each statement's counts and progress its own; a write that fails fails both, and both
    give their claims up (looked for at the provider by whichever runs them next)."""
    writes = outcome_writes.OutcomeWrites(rt)
    runs = [batch_run.BatchRun(rt, sid, writes) for sid in ("S-G1", "S-G2")]
    requests = [DeliveryRequest(id=f"d-g{n}", channel="sms", recipient=f"+8490000001{n}",
                                text="x", purpose="statement", statement_id=run.statement_id,
                                subscriber_id=f"sub-g{n}") for n, run in enumerate(runs)]
    for r in requests:
        await rt.redis.hset(rt.keys.delivery(r.id), mapping={"status": "sending"})
    before = await execs(rt)
    for n, (run, r) in enumerate(zip(runs, requests, strict=True)):
        run.record(r, Outcome("queued", "", provider_id=f"SMG{n}"))
    await asyncio.gather(*(run.flush() for run in runs))
    assert (writes.transactions, await execs(rt) - before) == (1, 1)
    assert [await rt.redis.hget(rt.keys.delivery(r.id), "status") for r in requests] == [
        "queued", "queued"]
    for run in runs:
        ledger = await rt.redis.hgetall(rt.keys.dispatch(run.statement_id))
        assert ledger["sms:sent"] == "1"
        assert float(ledger["progress_at"]) > 0

    again = [r.model_copy(update={"id": f"{r.id}-again"}) for r in requests]
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance)
    assert await claim(rt, again, "sms", utcnow()) == ["fresh", "fresh"]

    async def unwritten(*args: object) -> None:
        raise RuntimeError("Redis went away while recording")

    monkeypatch.setattr(outcome_writes, "_write", unwritten)
    for run, r in zip(runs, again, strict=True):
        run.record(r, Outcome("queued", "", provider_id=f"SMX{r.id}"))
    failed = await asyncio.gather(*(run.flush() for run in runs), return_exceptions=True)
    assert [type(e) for e in failed] == [RuntimeError, RuntimeError]
    assert writes.transactions == 2
    other = dataclasses.replace(rt, instance="instance-2")
    taken = await claim(other, again, "sms", utcnow())
    assert all(t.startswith("orphan|") for t in taken), taken


async def test_batches_under_way_write_on_one_clock(rt: Runtime) -> None:
    """Two batches started 7 ms apart (each run's first outcome is written at once, so
    their own 20 ms timers would be 7 ms apart) write their next outcomes, kept at the same
    moment, in one transaction: they wake on the worker's shared clock."""
    writes = outcome_writes.OutcomeWrites(rt)
    runs = [batch_run.BatchRun(rt, sid, writes) for sid in ("S-C1", "S-C2")]
    requests = {run.statement_id: [DeliveryRequest(
        id=f"d-{run.statement_id}-{n}", channel="email", recipient=f"c{n}@example.org",
        text="x", purpose="statement", statement_id=run.statement_id,
        subscriber_id=f"sub-c{n}") for n in (1, 2)] for run in runs}
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as kept:
        for run in runs:
            run.add(requests[run.statement_id])
            await kept.enter_async_context(run.kept_up())
            run.record(requests[run.statement_id][0], Outcome("sent", ""))
            await asyncio.sleep(0.007)
        await asyncio.sleep(0.05)  # both first outcomes written
        assert writes.transactions == 2
        while outcome_writes.next_tick(loop.time()) - loop.time() < 0.01:
            await asyncio.sleep(0.001)  # well before the next tick
        for run in runs:
            run.record(requests[run.statement_id][1], Outcome("sent", ""))
        await asyncio.sleep(0.05)
        assert writes.transactions == 3
    for run in runs:
        assert await rt.redis.hget(rt.keys.dispatch(run.statement_id), "email:sent") == "2"


async def test_a_run_whose_outcomes_cannot_be_recorded_fails_alone(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outcomes of two batches in one transaction, one batch's unfit for a record: that
    batch's write raises; the other's is written."""
    writes = outcome_writes.OutcomeWrites(rt)
    good, bad = (DeliveryRequest(id=f"d-{name}", channel="email",
                                 recipient=f"{name}@example.org", text="x",
                                 purpose="statement", statement_id=f"S-{name}",
                                 subscriber_id=f"sub-{name}") for name in ("good", "bad"))
    record = outcome_writes.outcome_record

    def unfit(rt: Runtime, request: DeliveryRequest, *args: Any) -> Any:
        if request.id == "d-bad":
            raise ValueError("not a record")
        return record(rt, request, *args)

    monkeypatch.setattr(outcome_writes, "outcome_record", unfit)
    answers = await asyncio.gather(writes.write([(good, Outcome("sent", ""))]),
                                   writes.write([(bad, Outcome("sent", ""))]),
                                   return_exceptions=True)
    assert answers[0] is None and isinstance(answers[1], ValueError), answers
    assert writes.transactions == 1
    assert await rt.redis.hget(rt.keys.delivery("d-good"), "status") == "sent"
    assert not await rt.redis.exists(rt.keys.delivery("d-bad"))


async def test_a_writer_stopped_mid_write_leaves_no_run_waiting(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer cancelled (the worker's loop ending) in the middle of a transaction, with
    another run's outcomes waiting for the next: both runs hear it at once
    (OutcomesNotWritten), rather than waiting for good, and a later write starts afresh."""
    writes = outcome_writes.OutcomeWrites(rt)
    requests = [DeliveryRequest(id=f"d-stop-{n}", channel="email", recipient=f"s{n}@ex.org",
                                text="x", purpose="statement", statement_id="S-STOP",
                                subscriber_id=f"sub-s{n}") for n in (1, 2, 3)]
    write = outcome_writes._write
    writing = asyncio.Event()

    async def hung(*args: Any) -> None:
        writing.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(outcome_writes, "_write", hung)
    first = asyncio.create_task(writes.write([(requests[0], Outcome("sent", ""))]))
    await asyncio.wait_for(writing.wait(), 5)
    second = asyncio.create_task(writes.write([(requests[1], Outcome("sent", ""))]))
    await asyncio.sleep(0)
    assert writes._writing is not None
    writes._writing.cancel()
    answers = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert [type(a) for a in answers] == [outcome_writes.OutcomesNotWritten] * 2
    monkeypatch.setattr(outcome_writes, "_write", write)
    await asyncio.wait_for(writes.write([(requests[2], Outcome("sent", ""))]), 5)
    assert await rt.redis.hget(rt.keys.delivery("d-stop-3"), "status") == "sent"


class _Answering:
    """An SMS channel that answers every message `queued`, with the provider id SM7."""

    name = "sms"
    max_length = None

    async def send(self, message: OutboundMessage) -> Receipt:
        return Receipt(delivery_id=message.id, provider_id="SM7", status="queued")


class _Looking(_Answering):
    """:class:`_Answering` that counts what it sends, and finds nothing when asked whether
    an attempt cut off reached it."""

    def __init__(self) -> None:
        self.sent = self.looked_up = 0

    async def send(self, message: OutboundMessage) -> Receipt:
        self.sent += 1
        return await super().send(message)

    async def reconcile(self, message: OutboundMessage, since: datetime) -> Receipt | None:
        self.looked_up += 1
        return None


async def test_a_single_delivery_takes_its_early_callback_with_its_outcome(
        rt: Runtime) -> None:
    """A prompt's SMS, whose `delivered` callback came before its send was recorded: the
    outcome and the provider id are one transaction, and the early status is applied."""
    request = DeliveryRequest(id="prompt:early", channel="sms", recipient="+84901000107",
                              text="x", purpose="prompt", person_id="an")
    await rt.redis.hset(rt.keys.early_callbacks(), "SM7", "delivered")
    before = await execs(rt)
    done = await deliver(rt, {"sms": _Answering()}, request, utcnow())  # type: ignore[dict-item]
    assert await execs(rt) - before == 1
    assert done.status == "delivered"
    assert await rt.redis.hget(rt.keys.delivery(request.id), "status") == "delivered"
    assert await rt.redis.get(rt.keys.provider_message("SM7")) == request.id
    assert not await rt.redis.hexists(rt.keys.early_callbacks(), "SM7")


async def test_a_delivery_whose_record_failed_is_released_for_any_worker(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt handed over whose outcome could not be recorded (Redis away, say): its
    claim is given up, so another worker that gets its event again looks for it at the
    provider, rather than finding it busy for as long as this (live) worker runs."""
    request = DeliveryRequest(id="prompt:released", channel="sms", recipient="+84901000109",
                              text="x", purpose="prompt", person_id="an")
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance)
    other = dataclasses.replace(rt, instance="instance-2")

    async def unrecorded(*args: object) -> None:
        raise RuntimeError("Redis went away while recording")

    monkeypatch.setattr(deliveries, "_finish", unrecorded)
    channel = _Looking()
    with pytest.raises(RuntimeError):
        await deliver(rt, {"sms": channel}, request, utcnow())  # type: ignore[dict-item]
    assert channel.sent == 1
    [taken] = await claim(other, [request], "sms", utcnow())
    assert taken.startswith("orphan|"), taken


async def test_a_batch_whose_outcomes_could_not_be_written_releases_them(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a batch: outcomes whose write failed leave their deliveries to
    whichever worker runs the batch again, looked for at the provider first."""
    request = DeliveryRequest(id="d-released", channel="sms", recipient="+84900000009",
                              text="x", purpose="statement", statement_id="S-REL",
                              subscriber_id="sub-9")
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance)
    assert await claim(rt, [request], "sms", utcnow()) == ["fresh"]
    other = dataclasses.replace(rt, instance="instance-2")
    assert await claim(other, [request], "sms", utcnow()) == ["busy"]

    async def unwritten(*args: object) -> None:
        raise RuntimeError("Redis went away while recording")

    monkeypatch.setattr(outcome_writes, "_write", unwritten)
    run = batch_run.BatchRun(rt, "S-REL")
    run.record(request, Outcome("queued", "SM9", provider_id="SM9"))
    with pytest.raises(RuntimeError):
        await run.flush()
    [taken] = await claim(other, [request], "sms", utcnow())
    assert taken.startswith("orphan|"), taken


class _Counting:
    """An SMS channel that, at its first message, asks Redis how many of the batch's
    deliveries are claimed yet."""

    name = "sms"
    max_length = None

    def __init__(self, rt: Runtime, ids: list[str]) -> None:
        self.rt, self.ids = rt, ids
        self.claimed_at_first: int | None = None
        self.sent = 0

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.claimed_at_first is None:
            self.claimed_at_first = 0
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                for i in self.ids:
                    pipe.hget(self.rt.keys.delivery(i), "status")
                self.claimed_at_first = sum(1 for s in await pipe.execute() if s)
        self.sent += 1
        return Receipt(message.id, f"SM{self.sent}", "queued")

    async def close(self) -> None:
        return None


async def _stored_batch(rt: Runtime, tag: str, size: int, cut: bool = True
                        ) -> tuple[Statement, list[Subscriber]]:
    """A statement and `size` SMS subscribers (numbers 1..size) in Ba Đình, all in its
    batch sms:0 unless not `cut`."""
    statement = Statement(
        id=f"STM-{tag}-1", incident_id=f"INC-{tag}", approval_id=f"APR-{tag}-1", draft_id="d",
        playbook_id="flood", kind="flood", severity=Severity.severe, area="hn-ba-dinh",
        texts=[RenderedText(channel="sms", language="vi", body="Ngập sâu")],
        approved_by=["nguyen-van-an"], approved_at=utcnow())
    subs = [Subscriber(id=canonical_id(n), phone=f"+8490{n:07d}", areas=["hn-ba-dinh"],
                       channels=["sms"], language="vi") for n in range(1, size + 1)]
    await rt.redis.hset(rt.keys.statement(statement.id), "statement",
                        statement.model_dump_json())
    async with rt.redis.pipeline(transaction=False) as pipe:
        for n, sub in enumerate(subs, start=1):
            queue_write(pipe, rt.keys, n, None, sub)
        await pipe.execute()
    if cut:
        await rt.redis.set(rt.keys.dispatch_batch(statement.id, "sms", 0),
                           ",".join(str(n) for n in range(1, size + 1)))
    return statement, subs


async def test_a_batch_hands_its_lead_over_before_reading_the_rest(rt: Runtime) -> None:
    """A statement's first SMS leaves while the rest of a big batch is still being read."""
    statement, subs = await _stored_batch(rt, "LEAD", 300)
    channel = _Counting(rt, [f"{statement.id}:sms:{s.id}" for s in subs])
    # Connections open already, as in a running worker: the count is not held up connecting.
    await asyncio.gather(*(rt.redis.ping() for _ in range(8)))
    report = await batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id="INC-LEAD", number=0), utcnow())
    assert channel.claimed_at_first == batches.LEAD
    assert channel.sent == 300 and report.counts == {"queued": 300} and report.done


class _Held:
    """An SMS channel whose first message gets its turn at once and then stays with the
    provider until the test lets it go; every other one waits for its turn (as at a rate
    limit) for ever."""

    name = "sms"
    max_length = None

    def __init__(self, fail: bool = False) -> None:
        self.with_provider = asyncio.Event()
        self.let_go = asyncio.Event()
        self.waiting = 0
        self.handed: list[str] = []
        self.fail = fail  # the first message's request ends in an error of ours

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.handed:
            self.waiting += 1
            await asyncio.Event().wait()  # its turn never comes
        await still_wanted(message)
        self.handed.append(message.id)
        self.with_provider.set()
        await self.let_go.wait()
        if self.fail:
            raise RuntimeError("a bug while handing over")
        return Receipt(message.id, "SM1", "queued")

    async def close(self) -> None:
        return None


async def _stopped_mid_batch(rt: Runtime, statement: Statement, channel: _Held,
                             stopping: Stopping, waiting: int) -> asyncio.Task[Any]:
    """The statement's batch sms:0 under way, its first message with the provider and
    `waiting` others waiting for their turn; then the worker's stop, and the provider
    answers. The batch's task (not awaited)."""
    batch = asyncio.create_task(batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
        number=0), utcnow(), stopping=stopping))
    await asyncio.wait_for(channel.with_provider.wait(), 5)

    async def all_waiting() -> None:
        while channel.waiting < waiting:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_waiting(), 5)
    assert stopping.begin() == 1
    channel.let_go.set()
    return batch


async def test_a_stopping_worker_gives_back_what_it_has_not_handed_over(rt: Runtime) -> None:
    """The worker stops while one SMS of a batch is with the provider and the rest wait for
    their turn: that one ends and is recorded; the others are given back, those never
    handed over by anyone as if never claimed, a dead worker's orphan as an orphan (looked
    for at the provider by the next run); and the batch is not done."""
    statement, subs = await _stored_batch(rt, "STOP", 10)
    ids = [f"{statement.id}:sms:{s.id}" for s in subs]
    await rt.redis.hset(rt.keys.delivery(ids[-1]), mapping={  # a dead worker's, in flight
        "status": "sending", "owner": "gone-worker/gone", "at": "2026-12-01T08:00:00+00:00"})
    channel, stopping = _Held(), Stopping()
    batch = await _stopped_mid_batch(rt, statement, channel, stopping, waiting=9)
    report = await asyncio.wait_for(batch, 5)

    assert report.counts == {"queued": 1} and report.left == 9 and not report.done
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    [handed] = channel.handed
    assert rows.pop(handed)["status"] == "queued"
    orphan = rows.pop(ids[-1])
    assert (orphan["status"], orphan["owner"], orphan["at"]) == (
        "sending", "", "2026-12-01T08:00:00+00:00")
    assert all("status" not in row and "owner" not in row for row in rows.values()), rows
    assert not await rt.redis.sismember(rt.keys.dispatch_done(statement.id), "sms:0")
    # The next run sends the eight as fresh, and looks for the orphan first.
    claims = await claim(rt, [DeliveryRequest(id=i, channel="sms", recipient="+84900000000",
                                              text="x", purpose="statement",
                                              statement_id=statement.id)
                              for i in [*rows, ids[-1]]], "sms", utcnow())
    assert claims[:8] == ["fresh"] * 8 and claims[8] == "orphan|2026-12-01T08:00:00+00:00"
    # A stopped worker starts no batch: it is held, for whichever worker runs it next.
    later = await batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id="INC-STOP", number=0),
        utcnow(), stopping=stopping)
    assert later == batches.BatchReport(held=True) and len(channel.handed) == 1


async def test_a_request_with_a_provider_that_never_answers_is_cut_off_after_its_grace(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebalance comes while one SMS of a batch is with a provider that never answers,
    and the rest wait for their turn: the rest are given back at once (fresh: nobody handed
    them over), that one once its grace is over; the batch ends, not done, and gives its
    partition up. The one cut off with the provider may still land there: every claim of
    it, this process's too, is `busy` until it would have, then it is an orphan, looked
    for at the provider first by the next run."""
    monkeypatch.setattr(stopping_module, "IN_FLIGHT_GRACE_S", 0.3)
    fast = dataclasses.replace(rt, settings=rt.settings.model_copy(
        update={"twilio_timeout_s": 2.3}))  # it may land for 2 s after the cut
    statement, subs = await _stored_batch(rt, "HANG", 4)
    ids = [f"{statement.id}:sms:{s.id}" for s in subs]
    channel, stopping = _Held(), Stopping()  # never let go
    batch = asyncio.create_task(batches.deliver_batch(fast, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
        number=0), utcnow(), stopping=stopping))
    await asyncio.wait_for(channel.with_provider.wait(), 5)

    async def all_waiting() -> None:
        while channel.waiting < 3:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_waiting(), 5)
    started = time.monotonic()
    assert stopping.pause() == 1
    report = await asyncio.wait_for(batch, 5)
    cut_at = time.monotonic()
    assert cut_at - started >= 0.3
    assert report.counts == {} and report.left == 4 and report.held and not report.done
    [handed] = channel.handed
    requests = {i: DeliveryRequest(id=i, channel="sms", recipient="+84900000000", text="x",
                                   purpose="statement", statement_id=statement.id)
                for i in ids}
    claims = await claim(fast, list(requests.values()), "sms", utcnow())
    assert claims == ["busy" if i == handed else "fresh" for i in ids]
    taken = "busy"
    while taken == "busy" and time.monotonic() - cut_at < 10:
        await asyncio.sleep(0.05)
        [taken] = await claim(fast, [requests[handed]], "sms", utcnow())
    assert taken.startswith("orphan|"), taken
    assert time.monotonic() - cut_at >= 1.8  # not before it would have landed


async def test_what_the_stop_cut_off_is_given_back_when_the_batch_fails(rt: Runtime) -> None:
    """The worker stops while one hand-over is with the provider, and that one then fails
    with an error of ours: the batch fails, its claim is released (an orphan for the next
    run), and the four the stop cut off are given back as never claimed all the same."""
    statement, subs = await _stored_batch(rt, "STOPFAIL", 5)
    ids = [f"{statement.id}:sms:{s.id}" for s in subs]
    channel, stopping = _Held(fail=True), Stopping()
    batch = await _stopped_mid_batch(rt, statement, channel, stopping, waiting=4)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(batch, 5)
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    [failed] = channel.handed
    assert (rows[failed]["status"], rows[failed]["owner"]) == ("sending", "")
    assert all("status" not in row for i, row in rows.items() if i != failed), rows


async def _batch_of_six_one_handed(rt: Runtime, tag: str
                                   ) -> tuple[list[str], _Held, asyncio.Task[Any]]:
    """A batch of six SMS under way: the first handed over and answered, the five others
    waiting for a turn that never comes. Its ids, channel and task (not awaited)."""
    statement, subs = await _stored_batch(rt, tag, 6)
    channel = _Held()
    channel.let_go.set()
    batch = asyncio.create_task(batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
        number=0), utcnow()))
    return [f"{statement.id}:sms:{s.id}" for s in subs], channel, batch


async def test_a_batch_whose_outcomes_cannot_be_written_hands_nothing_more_over(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis takes no outcomes while a batch runs: the batch hands nothing more over (the
    rest would go out unrecorded, minutes of them at a provider's rate), gives back what
    waited for its turn as never claimed, releases the one it handed over (an orphan,
    looked for at the provider by the next run), and fails with the write's error."""

    async def unwritten(*args: object) -> None:
        raise RuntimeError("Redis went away while recording")

    monkeypatch.setattr(outcome_writes, "_write", unwritten)
    ids, channel, batch = await _batch_of_six_one_handed(rt, "UNWRITTEN")
    with pytest.raises(RuntimeError, match="went away"):
        await asyncio.wait_for(batch, 5)  # before: the five waited for good
    [handed] = channel.handed
    assert channel.waiting == 5
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    assert (rows[handed]["status"], rows[handed]["owner"]) == ("sending", "")
    assert all("status" not in row and "owner" not in row
               for i, row in rows.items() if i != handed), rows


class _SecondHeld(_Held):
    """An SMS channel that answers the first message at once, keeps the second with the
    provider until the test lets it go, and never gives any other its turn."""

    async def send(self, message: OutboundMessage) -> Receipt:
        if len(self.handed) >= 2:
            self.waiting += 1
            await asyncio.Event().wait()
        await still_wanted(message)
        self.handed.append(message.id)
        if len(self.handed) == 2:
            self.with_provider.set()
            await self.let_go.wait()
        return Receipt(message.id, f"SM{len(self.handed)}", "queued")


async def test_a_request_with_the_provider_ends_when_a_batch_cannot_record(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first outcome of a batch cannot be written while its second SMS is with the
    provider: that request is not cut off after the stop's grace (cut off, it could land
    all the same, and the next run would find it busy until then); it ends, and its
    outcome is written with the batch's last write."""
    monkeypatch.setattr(stopping_module, "IN_FLIGHT_GRACE_S", 0.05)
    write = outcome_writes._write
    failed: list[bool] = []

    async def first_fails(*args: Any) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("Redis went away while recording")
        await write(*args)

    monkeypatch.setattr(outcome_writes, "_write", first_fails)
    statement, subs = await _stored_batch(rt, "INFLIGHT", 6)
    ids = [f"{statement.id}:sms:{s.id}" for s in subs]
    channel = _SecondHeld()
    batch = asyncio.create_task(batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
        number=0), utcnow()))
    await asyncio.wait_for(channel.with_provider.wait(), 5)
    while not failed:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # past the grace
    channel.let_go.set()
    with pytest.raises(RuntimeError, match="went away"):
        await asyncio.wait_for(batch, 5)
    first, second = channel.handed
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    assert (rows[first]["status"], rows[first]["owner"]) == ("sending", "")  # released
    assert rows[second]["status"] == "queued"
    assert all("status" not in rows[i] for i in ids if i not in (first, second)), rows


class _Blind(batch_run.BatchRun):
    """A batch run that cannot ask Redis whether its statement was withdrawn, or who left,
    from its first recorded outcome on."""

    async def refresh(self, withdrawn_only: bool = False) -> None:
        if not self.recorded:  # a slow machine: nothing handed over yet
            return await super().refresh(withdrawn_only)
        raise RuntimeError("Redis went away while asking")


async def test_a_batch_that_cannot_check_for_a_withdrawal_hands_nothing_more_over(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that cannot learn whether its statement was withdrawn (asked every
    quarter second) stops handing over as at the worker's stop, rather than going on past
    a withdrawal it cannot see; the one handed over before is recorded."""
    monkeypatch.setattr(batches, "BatchRun", _Blind)
    ids, channel, batch = await _batch_of_six_one_handed(rt, "BLIND")
    with pytest.raises(RuntimeError, match="asking"):
        await asyncio.wait_for(batch, 5)
    [handed] = channel.handed
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    assert rows[handed]["status"] == "queued"
    assert all("status" not in row and "owner" not in row
               for i, row in rows.items() if i != handed), rows


class _Down:
    """An SMS channel whose provider answers every send with a transient error (down, or
    throttling): each delivery of a batch tries, waits, and tries again. The first message
    it is given stays with the provider until the test lets it go; the last one given
    never gets its turn (as at a rate limit)."""

    name = "sms"
    max_length = None

    def __init__(self, first: str, last: str) -> None:
        self.first, self.last = first, last
        self.attempts: dict[str, int] = {}
        self.with_provider = asyncio.Event()
        self.let_go = asyncio.Event()

    async def send(self, message: OutboundMessage) -> Receipt:
        if message.id == self.last:
            await asyncio.Event().wait()  # its turn never comes
        await still_wanted(message)
        self.attempts[message.id] = self.attempts.get(message.id, 0) + 1
        if message.id == self.first and self.attempts[message.id] == 1:
            self.with_provider.set()
            await self.let_go.wait()
        raise TransientDeliveryError("sms: Twilio answered 503")

    async def close(self) -> None:
        return None


async def test_a_stop_cuts_off_deliveries_between_their_attempts(rt: Runtime) -> None:
    """A provider that is down: a batch's deliveries wait between attempts (up to 15.5 s
    for six). The worker's stop cuts off at once those waiting to try again, and the one
    whose request was with the provider as the stop came cuts itself off when that request
    fails, rather than running their retries out. Each of them is given back as possibly
    with the provider (an attempt was made), so the next run looks for it there before
    sending; the one that never had its turn is given back as never claimed; the batch is
    not done."""
    statement, subs = await _stored_batch(rt, "DOWN", 6)
    ids = [f"{statement.id}:sms:{s.id}" for s in subs]
    channel, stopping = _Down(first=ids[0], last=ids[-1]), Stopping()
    batch = asyncio.create_task(batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
        number=0), utcnow(), stopping=stopping))

    async def waiting_to_try_again() -> None:
        while not (stopping.runs and set(ids[1:-1]) <= next(iter(stopping.runs)).retrying):
            await asyncio.sleep(0.005)

    await asyncio.wait_for(channel.with_provider.wait(), 5)
    await asyncio.wait_for(waiting_to_try_again(), 10)
    assert stopping.begin() == 1
    attempts_at_the_stop = dict(channel.attempts)
    channel.let_go.set()  # the request with the provider fails now, after the stop
    report = await asyncio.wait_for(batch, 1)  # not the rest of the retries' waits
    assert report.counts == {} and report.left == 6 and not report.done
    assert channel.attempts == attempts_at_the_stop  # none tried again after the stop
    assert channel.attempts[ids[0]] == 1 and ids[-1] not in channel.attempts
    rows = {i: await rt.redis.hgetall(rt.keys.delivery(i)) for i in ids}
    assert {(rows[i]["status"], rows[i]["owner"]) for i in ids[:-1]} == {("sending", "")}
    assert "status" not in rows[ids[-1]] and "owner" not in rows[ids[-1]]
    claims = await claim(rt, [DeliveryRequest(id=i, channel="sms", recipient="+84900000000",
                                              text="x", purpose="statement",
                                              statement_id=statement.id) for i in ids],
                         "sms", utcnow())
    assert all(c.startswith("orphan|") for c in claims[:-1]), claims
    assert claims[-1] == "fresh"


async def test_a_batch_run_hands_one_delivery_id_over_once(rt: Runtime) -> None:
    """The same delivery twice in one part (a subscriber with a channel listed twice, as
    older releases stored them) starts one hand-over, not two."""
    request = DeliveryRequest(id="S-TWICE:sms:sub-n1", channel="sms", recipient="+84900000001",
                              text="x", purpose="statement", statement_id="S-TWICE",
                              subscriber_id="sub-n1")
    run = batch_run.BatchRun(rt, "S-TWICE")
    started: list[str] = []

    async def one(r: DeliveryRequest, claim: str) -> None:
        started.append(r.id)

    run.hand([request, request], ["fresh", "fresh"], one)
    await asyncio.gather(*run.handing.values())
    assert started == [request.id] and list(run.claims) == [request.id]


async def test_a_batch_another_worker_shares_is_marked_done_once_its_part_ends(
        rt: Runtime) -> None:
    """The same batch run by two workers at once (a redelivery after a rebalance): this run
    hands over its part, sees the rest in another live worker's hands, and marks the batch
    done once that worker has recorded them, not seconds later in the recovery round."""
    statement, subs = await _stored_batch(rt, "SHARED", 10)
    # the other worker, alive, is handing over the last three
    await rt.redis.set(rt.keys.worker_heartbeat("other-worker"), "other-instance")
    theirs = [f"{statement.id}:sms:{s.id}" for s in subs[7:]]
    for delivery_id in theirs:
        await rt.redis.hset(rt.keys.delivery(delivery_id), mapping={
            "status": "sending", "owner": "other-worker/other-instance",
            "at": utcnow().isoformat()})
    channel = _Counting(rt, [])

    async def the_other_worker_records_its_part() -> None:
        await asyncio.sleep(0.5)
        for delivery_id in theirs:
            await rt.redis.hset(rt.keys.delivery(delivery_id), "status", "queued")

    recording = asyncio.create_task(the_other_worker_records_its_part())
    report = await batches.deliver_batch(rt, {"sms": channel}, DeliveryBatch(
        statement_id=statement.id, channel="sms", incident_id="INC-SHARED", number=0),
        utcnow())
    await recording
    assert channel.sent == 7 and report.counts == {"queued": 7, "busy": 3}
    assert report.done
    assert await rt.redis.sismember(rt.keys.dispatch_done(statement.id), "sms:0")


async def test_a_claim_says_whose_a_delivery_is_and_never_takes_it_from_a_live_worker(
        rt: Runtime) -> None:
    """One script claims: fresh (stamped now), busy while another live process sends it
    (nothing changes), an orphan with when it was first started once that process is gone,
    and a final status as it is."""
    request = DeliveryRequest(id="prompt:P-1", channel="sms", recipient="+84901000101",
                              text="Loa", purpose="prompt", person_id="nguyen-van-an")
    key = rt.keys.delivery(request.id)
    first, later = utcnow(), utcnow().replace(year=2030)
    assert await claim(rt, [request], "sms", first) == ["fresh"]
    row = await rt.redis.hgetall(key)
    assert (row["status"], row["at"], row["to"], row["attempts"]) == (
        "sending", first.isoformat(), "person:nguyen-van-an", "1")
    await rt.redis.hset(key, "owner", "w2/instance-2")  # another worker's, alive
    await rt.redis.set(rt.keys.worker_heartbeat("w2"), "instance-2")
    assert await claim(rt, [request], "sms", later) == ["busy"]
    row = await rt.redis.hgetall(key)
    assert (row["owner"], row["attempts"]) == ("w2/instance-2", "1")
    await rt.redis.hset(key, "owner", "w3/instance-3")  # a worker with no heartbeat: gone
    assert await claim(rt, [request], "sms", later) == [f"orphan|{first.isoformat()}"]
    row = await rt.redis.hgetall(key)
    assert (row["owner"], row["at"], row["attempts"]) == (
        f"{rt.settings.worker_id}/{rt.instance}", first.isoformat(), "2")
    await rt.redis.hset(key, "status", "delivered")
    assert await claim(rt, [request], "sms", later) == ["delivered"]
    assert (await rt.redis.hgetall(key))["attempts"] == "2"


async def test_a_single_delivery_a_live_worker_is_sending_is_left_to_it(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt's event handled while another live worker is still handing the prompt over
    (the recovery round sent it again while that worker waits out a provider's errors):
    after a short wait it is left to that worker, kept for the recovery round, and not
    sent; once that worker is gone, the next try looks for it at the provider and sends it
    once."""
    monkeypatch.setattr(deliveries, "BUSY_WAIT_S", 0.5)
    request = DeliveryRequest(id="prompt:held", channel="sms", recipient="+84901000108",
                              text="x", purpose="prompt", person_id="an")
    key = rt.keys.delivery(request.id)
    await keep_delivery(rt.redis, rt.keys, request)
    await rt.redis.hset(key, mapping={"status": "sending", "owner": "w2/instance-2",
                                      "at": utcnow().isoformat()})
    await rt.redis.set(rt.keys.worker_heartbeat("w2"), "instance-2")
    channel = _Looking()
    done = await deliver(rt, {"sms": channel}, request, utcnow())  # type: ignore[dict-item]
    assert (done.status, channel.sent) == ("sending", 0)
    assert (await rt.redis.hgetall(key))["owner"] == "w2/instance-2"
    assert await rt.redis.hexists(rt.keys.deliveries_pending(), request.id)

    await rt.redis.delete(rt.keys.worker_heartbeat("w2"))  # that worker died
    done = await deliver(rt, {"sms": channel}, request, utcnow())  # type: ignore[dict-item]
    assert (done.status, channel.sent, channel.looked_up) == ("queued", 1, 1)
    assert not await rt.redis.hexists(rt.keys.deliveries_pending(), request.id)


async def _approved(rt: Runtime, tag: str, size: int
                    ) -> tuple[Runtime, Statement, list[tuple[str, str]], Pipeline, _Counting]:
    """A statement approved for `size` SMS subscribers, in chunks of 10; a worker's pipeline
    whose broker stand-in notes what goes on each topic, and its SMS channel."""
    rt = dataclasses.replace(rt, settings=rt.settings.model_copy(
        update={"dispatch_batch_size": 10}))
    statement, subs = await _stored_batch(rt, tag, size, cut=False)
    await rt.redis.hset(rt.keys.approval(statement.approval_id), "status", "approved")
    now = utcnow()
    opened = Incident(id=statement.incident_id, kind="flood", area="hn-ba-dinh",
                      severity=Severity.severe, title="Ngập sâu", details="",
                      status=IncidentStatus.approved, opened_at=now,
                      last_report_at=now, updated_at=now, playbook="flood")
    await rt.redis.hset(rt.keys.incident(opened.id), mapping=opened.to_hash())
    sent: list[tuple[str, str]] = []

    async def broker_up(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))

    channel = _Counting(rt, [f"{statement.id}:sms:{s.id}" for s in subs])
    pipeline = Pipeline(rt, {}, broker_up, lambda _timer: None, bulk_channels={"sms": channel})
    return rt, statement, sent, pipeline, channel


async def _consumed(pipeline: Pipeline, sent: list[tuple[str, str]],
                    statement: Statement) -> None:
    """Each batch on the lane handled by its consumer, once."""
    for name, key in sent:
        assert name == "dispatch.sms"
        number = int(key.rpartition(":")[2])
        await pipeline.deliver_batch(DeliveryBatch(
            statement_id=statement.id, channel="sms", incident_id=statement.incident_id,
            number=number).to_bytes())


async def test_a_fan_outs_first_batch_is_handed_over_by_its_publisher(rt: Runtime) -> None:
    """The publication hands the first chunk's batch over beside itself: a statement's
    first SMS does not wait for a hop through `dispatch.sms`. The other chunks' batches go
    on the lane, for every worker to take a share. Each subscriber gets one SMS."""
    rt, statement, sent, pipeline, channel = await _approved(rt, "FIRST", 30)
    await pipeline.publish(statement.to_bytes())
    assert sent == [("dispatch.sms", f"{statement.id}:1"), ("dispatch.sms", f"{statement.id}:2")]
    assert await pipeline.at_once.finish(5) == 0
    assert channel.sent == 10
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert (ledger["audience"], ledger["chunks"], ledger["batches"], ledger["cursor"]) == (
        "30", "3", "3", "-1")  # three whole chunks, and no empty one after them
    await _consumed(pipeline, sent, statement)
    assert channel.sent == 30
    assert await rt.redis.hexists(rt.keys.dispatch(statement.id), "finished_at")


async def test_a_first_batch_met_by_shutdown_goes_on_its_lane(rt: Runtime) -> None:
    """The worker is stopping as it publishes: the first batch is not started beside the
    publication but put on its lane (the broker is still up), for a worker still running to
    hand it over at once. Each subscriber gets one SMS."""
    rt, statement, sent, pipeline, channel = await _approved(rt, "STOP", 25)
    pipeline.at_once.closing = True  # shutting down: nothing more starts beside a handler
    await pipeline.publish(statement.to_bytes())
    assert sent == [("dispatch.sms", f"{statement.id}:{n}") for n in range(3)]
    assert channel.sent == 0
    await _consumed(pipeline, sent, statement)
    assert channel.sent == 25
    assert await rt.redis.hexists(rt.keys.dispatch(statement.id), "finished_at")


async def test_a_first_batch_whose_worker_died_is_sent_again_at_once(rt: Runtime) -> None:
    """The publishing worker is killed as its first batch starts (nothing of it runs, and
    nothing goes on the broker): while its heartbeat is there, the recovery round leaves the
    batch to it; once it is gone, the round puts the batch on its lane, once, though the
    rest of the fan-out is still moving (not stalled)."""
    rt, statement, sent, pipeline, channel = await _approved(rt, "KILL", 25)
    killed = AtOnce(pipeline.send, (topics.DISPATCH_SMS,), lambda _kept: asyncio.sleep(0))
    killed.closing = True  # drops its work, and does not hand it on: as SIGKILL would
    pipeline.at_once = killed
    await pipeline.publish(statement.to_bytes())
    assert sent == [("dispatch.sms", f"{statement.id}:1"), ("dispatch.sms", f"{statement.id}:2")]
    await _consumed(pipeline, sent, statement)
    assert channel.sent == 15
    del sent[:]
    heartbeat = rt.keys.worker_heartbeat(rt.settings.worker_id)

    async def round_() -> Recovered:
        await rt.redis.delete(rt.keys.recovery_lock())  # each round its own (rounds 5 s apart)
        return await recover(rt, pipeline.send)

    await rt.redis.set(heartbeat, rt.instance)
    assert not await round_()  # alive: its own to finish
    await rt.redis.delete(heartbeat)
    found = await round_()
    assert found.batches_sent_again == 1 and found.fan_outs_resumed == 0
    assert sent == [("dispatch.sms", f"{statement.id}:0")]
    assert not await round_()  # once
    await _consumed(pipeline, sent, statement)
    assert channel.sent == 25
    assert await rt.redis.hexists(rt.keys.dispatch(statement.id), "finished_at")


async def test_a_claim_run_again_is_the_same_claim(rt: Runtime) -> None:
    """A claim run twice with the same moment by the same process (a pipeline run again
    after Redis lost a script) is `fresh` both times and counts one attempt; a later claim
    by the same process finds its own delivery `sending`: an orphan, to be looked up."""
    request = DeliveryRequest(id="d-again", channel="sms", recipient="+84900000002",
                              text="x", purpose="statement", statement_id="S-2",
                              subscriber_id="sub-2")
    now = utcnow()
    assert await claim(rt, [request], "sms", now) == ["fresh"]
    assert await claim(rt, [request], "sms", now) == ["fresh"]
    record = await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert (record["status"], record["attempts"], record["at"]) == ("sending", "1",
                                                                   now.isoformat())
    later = await claim(rt, [request], "sms", utcnow().replace(year=2030))
    assert later == [f"orphan|{now.isoformat()}"]


async def test_a_fan_out_locked_by_a_holder_that_never_started_stays_kept(rt: Runtime) -> None:
    """Another worker took the right to cut the audience and has not recorded anything
    yet: while it is alive, the publication leaves the statement kept in the outbox
    (nothing else records that it must go out); once that worker is gone (its heartbeat
    expired, the lock not yet), publishing it again takes the lock and fans it out."""
    rt, statement, sent, pipeline, channel = await _approved(rt, "HELD", 25)
    kept = statement_message_id(statement.id)
    await outbox.keep(rt.redis, rt.keys, {
        kept: (topics.STATEMENTS.name, statement.incident_id, statement.to_bytes())})
    lock = rt.keys.dispatch_lock(statement.id)
    await rt.redis.set(lock, "worker-9/instance-9", px=30_000)
    await rt.redis.set(rt.keys.worker_heartbeat("worker-9"), "instance-9")
    await pipeline.publish(statement.to_bytes())
    assert sent == [] and channel.sent == 0
    assert await rt.redis.hexists(rt.keys.followups(), kept)
    await rt.redis.set(rt.keys.worker_heartbeat("worker-9"), "instance-10")  # restarted
    await pipeline.publish(statement.to_bytes())  # the lock has 30 s to run still
    assert await pipeline.at_once.finish(5) == 0
    await _consumed(pipeline, sent, statement)
    assert channel.sent == 25
    assert not await rt.redis.hexists(rt.keys.followups(), kept)


async def test_a_cutter_whose_lock_was_taken_over_stops_and_counts_nothing_twice(
        rt: Runtime) -> None:
    """Another worker took the right to cut the fan-out over (this one's heartbeat had
    lapsed) while this one was sending its first chunk's batch: this one records no more
    chunks, and does not mark the fan-out cut through; the counters hold the one chunk it
    recorded, for the new holder to go on from."""
    rt, statement, sent, _, _ = await _approved(rt, "TAKEN", 30)
    lock = rt.keys.dispatch_lock(statement.id)

    async def send(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))
        await rt.redis.set(lock, "worker-9/instance-9", px=30_000)  # taken over meanwhile

    assert await fan_out(rt, statement, send) == 10
    assert sent == [("dispatch.sms", f"{statement.id}:0")]
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert (ledger["chunks"], ledger["batches"], ledger["targeted:sms"]) == ("1", "1", "10")
    assert "queued_all" not in ledger
    assert await rt.redis.get(lock) == "worker-9/instance-9"  # left to its new holder
    assert await rt.redis.exists(rt.keys.dispatch_audience(statement.id))


def _lock_runs_out_at_first_send(rt: Runtime, statement: Statement,
                                 sent: list[tuple[str, str]]
                                 ) -> tuple[Send, asyncio.Event, asyncio.Event]:
    """A broker stand-in whose first send waits (until the test sets `go_on`), and during
    which the fan-out's lock runs out (`held` is set then)."""
    lock = rt.keys.dispatch_lock(statement.id)
    held, go_on = asyncio.Event(), asyncio.Event()

    async def slow_broker(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))
        if len(sent) == 1:
            await rt.redis.delete(lock)  # ran out while waiting
            held.set()
            await go_on.wait()

    return slow_broker, held, go_on


async def test_a_cutter_whose_lock_ran_out_takes_it_again_and_one_process_cuts_once(
        rt: Runtime) -> None:
    """The lock ran out while a chunk's batch waited for the broker, and nobody took it:
    the cutter takes it again and cuts through. Meanwhile the same statement in the same
    process (a recovery round) is left to that cutter (the lock names both alike): every
    chunk is counted once."""
    rt, statement, sent, _, _ = await _approved(rt, "RANOUT", 30)
    slow_broker, held, go_on = _lock_runs_out_at_first_send(rt, statement, sent)
    cutting = asyncio.create_task(fan_out(rt, statement, slow_broker))
    try:
        await asyncio.wait_for(held.wait(), 5)
        assert await fan_out(rt, statement, slow_broker) is None
    finally:
        go_on.set()
    assert await cutting == 30
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert (ledger["chunks"], ledger["batches"], ledger["targeted:sms"]) == ("3", "3", "30")
    assert "queued_all" in ledger
    assert [key for _, key in sent] == [f"{statement.id}:{n}" for n in range(3)]


async def test_a_cutter_that_takes_back_its_lock_after_another_cut_through_stops(
        rt: Runtime) -> None:
    """The lock ran out while a chunk's batch waited for the broker; another worker took it,
    cut the rest through and let it go. The first cutter, back, finds the lock free but
    the ledger moved on: it records nothing more, and every chunk is counted once."""
    rt, statement, sent, _, _ = await _approved(rt, "AFTER", 30)
    other = dataclasses.replace(rt, instance="instance-2")
    slow_broker, held, go_on = _lock_runs_out_at_first_send(rt, statement, sent)
    cutting = asyncio.create_task(fan_out(rt, statement, slow_broker))
    try:
        await asyncio.wait_for(held.wait(), 5)
        assert await fan_out(other, statement, _noting(sent)) == 20  # chunks 1 and 2
    finally:
        go_on.set()
    assert await cutting == 10
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert (ledger["chunks"], ledger["batches"], ledger["targeted:sms"]) == ("3", "3", "30")
    assert [key for _, key in sent] == [f"{statement.id}:{n}" for n in range(3)]


async def test_a_cutter_that_stalled_before_resolving_does_not_reopen_a_finished_fan_out(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cutter read an empty ledger, then stalled past its heartbeat; another worker cut
    the fan-out through and it finished. The first, back, neither reopens it (the open
    index) nor rebuilds its audience; a stray open entry left by such a cutter clears at
    the next settle."""
    rt, statement, sent, pipeline, channel = await _approved(rt, "STALL", 30)
    await pipeline.publish(statement.to_bytes())
    await pipeline.at_once.finish(5)
    await _consumed(pipeline, sent, statement)
    assert await rt.redis.hexists(rt.keys.dispatch(statement.id), "finished_at")
    stale = Ledger.from_hash(statement.id, {})  # what it read before the others' cut

    async def read_before(*args: object) -> tuple[bool, Ledger, int]:
        return True, stale, 0  # and its hold not sure: its heartbeat had lapsed

    monkeypatch.setattr(fanout, "lock_and_read", read_before)
    assert await fan_out(rt, statement, pipeline.send) is None
    assert await rt.redis.zscore(rt.keys.dispatches_open(), statement.id) is None
    assert not await rt.redis.exists(rt.keys.dispatch_audience(statement.id))
    assert channel.sent == 30
    await rt.redis.zadd(rt.keys.dispatches_open(), {statement.id: 1.0})  # as before the fix
    assert await settle(rt.redis, rt.keys, statement.id, 2.0)
    assert await rt.redis.zscore(rt.keys.dispatches_open(), statement.id) is None


async def watches(rt: Runtime) -> int:
    """How many WATCH commands this Redis has run so far."""
    return int((await rt.redis.info("commandstats")).get("cmdstat_watch", {}).get("calls", 0))


async def test_a_cutter_sure_of_its_lock_writes_without_watching_it(rt: Runtime) -> None:
    """A cutter whose heartbeat had seconds to run when it took the lock cannot have lost
    it yet: its writes are one round trip each, with no WATCH. Without a heartbeat to go
    by, every write is checked under WATCH."""
    rt, statement, sent, _, _ = await _approved(rt, "SURE", 30)
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance, ex=10)
    before = await watches(rt)
    assert await fan_out(rt, statement, _noting(sent)) == 30
    assert await watches(rt) == before
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert (ledger["chunks"], ledger["batches"], ledger["targeted:sms"]) == ("3", "3", "30")
    assert "queued_all" in ledger

    rt, statement, sent, _, _ = await _approved(rt, "UNSURE", 30)
    await rt.redis.delete(rt.keys.worker_heartbeat(rt.settings.worker_id))
    before = await watches(rt)
    assert await fan_out(rt, statement, _noting(sent)) == 30
    assert await watches(rt) - before == 5  # the resolution, three chunks, the end


def _noting(sent: list[tuple[str, str]]) -> Send:
    async def broker(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key))
    return broker


async def test_outcomes_recorded_after_the_writer_failed_are_still_written(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's writer failed once (its outcomes given up, for another claim to look up
    at the provider) and stopped: an outcome recorded after that is written as the batch
    ends, not left `sending` under a live worker."""
    first, later = (DeliveryRequest(id=f"d-after-{n}", channel="sms",
                                    recipient=f"+8490000001{n}", text="x", purpose="statement",
                                    statement_id="S-AFTER", subscriber_id=f"sub-1{n}")
                    for n in (1, 2))
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), rt.instance)
    assert await claim(rt, [first, later], "sms", utcnow()) == ["fresh", "fresh"]
    write = outcome_writes._write
    failed = asyncio.Event()

    async def once_failing(*args: object) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("Redis went away while recording")
        await write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(outcome_writes, "_write", once_failing)
    run = batch_run.BatchRun(rt, "S-AFTER")
    run.add([first, later])
    with pytest.raises(RuntimeError):
        async with run.kept_up():
            run.record(first, Outcome("queued", "SM11", provider_id="SM11"))
            await asyncio.wait_for(failed.wait(), 5)  # the writer tried, failed and stopped
            await asyncio.sleep(0.05)
            run.record(later, Outcome("queued", "SM12", provider_id="SM12"))
    assert (await rt.redis.hgetall(rt.keys.delivery(first.id)))["owner"] == ""
    assert (await rt.redis.hgetall(rt.keys.delivery(later.id)))["status"] == "queued"


async def test_a_fan_out_withdrawn_before_it_started_reaches_nobody(rt: Runtime) -> None:
    rt, statement, sent, pipeline, channel = await _approved(rt, "GONE", 25)
    await rt.redis.hset(rt.keys.dispatch(statement.id), "withdrawn_at", "2026-12-06T08:00:00")
    await pipeline.publish(statement.to_bytes())
    assert sent == [] and channel.sent == 0 and not pipeline.at_once.tasks
    assert not await rt.redis.exists(rt.keys.dispatch_audience(statement.id))
    ledger = await rt.redis.hgetall(rt.keys.dispatch(statement.id))
    assert "resolved" not in ledger and "finished_at" in ledger


async def test_only_ids_a_provider_calls_back_with_are_kept(rt: Runtime) -> None:
    """An SMS's Twilio SID is kept a week for its status callbacks; an email's Message-ID
    is not (nothing calls back with it, and a fan-out of a million emails would keep a
    million keys for a week)."""
    writes = outcome_writes.OutcomeWrites(rt)
    run = batch_run.BatchRun(rt, "S-P1", writes)
    sms, mail = (DeliveryRequest(id=f"d-p1-{channel}", channel=channel,  # type: ignore[arg-type]
                                 recipient=to, text="x", purpose="statement",
                                 statement_id="S-P1", subscriber_id="sub-p1")
                 for channel, to in (("sms", "+84900000001"), ("email", "p1@example.org")))
    run.add([sms, mail])
    async with run.kept_up():
        run.record(sms, Outcome("queued", "SMp1", provider_id="SMp1"))
        run.record(mail, Outcome("sent", "<d-p1-email@loa>", provider_id="<d-p1-email@loa>"))
        await asyncio.sleep(0.1)
    assert await rt.redis.get(rt.keys.provider_message("SMp1")) == "d-p1-sms"
    assert not await rt.redis.exists(rt.keys.provider_message("<d-p1-email@loa>"))
    assert await rt.redis.hget(rt.keys.delivery("d-p1-email"), "status") == "sent"
