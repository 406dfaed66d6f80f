"""A batch being handed over (``dispatch.batches``): its outcomes, written with those of the
worker's other batches (``dispatch.outcome_writes``); which of its deliveries are not wanted
any more; and what the worker's stop or a rebalance cuts off (``dispatch.stopping``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from typing import Any

from coordinator import observability as obs
from coordinator.dispatch.handover import (
    FINAL,
    Outcome,
    claims_of,
    give_back,
    give_back_landing,
    queue_claim,
    reason_not_to_send,
    release,
)
from coordinator.dispatch.outcome_writes import OutcomeWrites, next_tick
from coordinator.dispatch.stopping import SingleHandOver
from coordinator.events import DeliveryRequest
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, run_pipeline
from coordinator.subscribers.store import queue_active

log = obs.get_logger("dispatch")
FINAL_OR_BUSY = FINAL | {"busy"}  # claims whose hand-over sends nothing

WITHDRAWN_EVERY_S = 0.25
"""How stale a batch's knowledge that its statement was withdrawn may be at a hand-over."""
LEAVERS_EVERY_S = 1.0
"""How stale its knowledge of who said STOP or left may be (one round trip for the whole
batch, its cost growing with the batch)."""


class BatchRun:
    """A batch being handed over: its outcomes, written every
    ``outcome_writes.FLUSH_EVERY_S`` with the other runs' (`writes`: the worker's), and
    which of its deliveries are not wanted any more (withdrawn, STOP, left), asked of Redis
    for the whole batch in one round trip now and then (:data:`WITHDRAWN_EVERY_S`,
    :data:`LEAVERS_EVERY_S`) rather than once per delivery."""

    def __init__(self, rt: Runtime, statement_id: str,
                 writes: OutcomeWrites | None = None) -> None:
        self.rt = rt
        self.statement_id = statement_id
        self.writes = writes or OutcomeWrites(rt)
        self.waiting: dict[str, DeliveryRequest] = {}  # not handed over, skipped or final yet
        self.unwanted: dict[str, str] = {}  # delivery id -> why
        self.outcomes: list[tuple[DeliveryRequest, Outcome]] = []
        self.recorded = 0
        self.wake = asyncio.Event()  # the ticker's: write now
        # The stop: each delivery's hand-over (its task), and what the stop may cut off of
        # it (``dispatch.stopping.SingleHandOver``: before its channel's turn, or between
        # two attempts).
        self.stopped = False
        self.in_flight_too = False  # the stop cuts off requests with the provider too
        self.handing: dict[str, asyncio.Task[None]] = {}
        self.singles: dict[str, SingleHandOver] = {}
        self.claims: dict[str, str] = {}
        self.unread = 0  # subscribers of the batch not read when the worker stopped

    @property
    def retrying(self) -> set[str]:
        """The deliveries between a transient failure and their next attempt's turn."""
        return {i for i, single in self.singles.items() if single.retrying}

    @property
    def cut(self) -> dict[str, DeliveryRequest]:
        """The deliveries the stop cut off (never recorded, so still waiting)."""
        return {i: self.waiting[i] for i, single in self.singles.items()
                if single.cut and i in self.waiting}

    def wanted(self, request: DeliveryRequest) -> Callable[[], Awaitable[bool]]:
        """The channel's last question before the hand-over (answered from memory); from
        its answer on, the delivery may be with the provider, and a stop lets it end (for
        ``stopping.IN_FLIGHT_GRACE_S``)."""
        async def ask() -> bool:
            return request.id not in self.unwanted
        return self.singles[request.id].wanted(ask)

    def backoff(self, request: DeliveryRequest) -> Callable[[float], Awaitable[None]]:
        """The wait before a delivery's next attempt. From there until the attempt's turn
        comes the stop cuts it off; one whose failed attempt ends after the stop cuts
        itself off here."""
        return self.singles[request.id].backoff

    def add(self, requests: list[DeliveryRequest]) -> None:
        """Deliveries claimed for this run, to be handed over."""
        self.waiting |= {r.id: r for r in requests}

    def until_stopped(self, parts: list[list[int]]) -> Iterator[list[int]]:
        """The batch's parts (of subscriber numbers) in turn, until the worker stops; how
        many subscribers were not read then: :attr:`unread`."""
        self.unread = sum(len(part) for part in parts)
        for part in parts:
            if self.stopped:
                return
            self.unread -= len(part)
            yield part

    def hand(self, requests: list[DeliveryRequest], claims: list[str],
             one: Callable[[DeliveryRequest, str], Coroutine[Any, Any, None]]) -> None:
        """Start handing claimed deliveries over, each by its own task running `one`
        (cut off should the worker stop before the channel's turn comes)."""
        for request, claim in zip(requests, claims, strict=True):
            if request.id in self.handing:  # one delivery id, one hand-over
                continue
            self.waiting[request.id] = request
            self.claims[request.id] = claim
            single = self.singles[request.id] = SingleHandOver()
            single.task = self.handing[request.id] = asyncio.create_task(one(request, claim))
        if self.stopped:
            self.stop(self.in_flight_too)

    def claimed(self, claim: str) -> list[str]:
        """The deliveries whose claim was `claim` (e.g. `busy`)."""
        return [delivery_id for delivery_id, c in self.claims.items() if c == claim]

    def failure(self, ended: list[Any]) -> BaseException | None:
        """The first error the hand-overs (`ended`: what each task of :attr:`handing` came
        to) ended with, those cut off by the stop apart."""
        return next((e for delivery_id, e in zip(self.handing, ended, strict=True)
                     if isinstance(e, BaseException) and not self._cut_off(delivery_id, e)),
                    None)

    def stop(self, in_flight_too: bool = True) -> None:
        """The worker stops (or a rebalance comes): cut off every hand-over whose turn has
        not come, and, `in_flight_too`, those with the provider after their grace (see
        ``dispatch.stopping``); :meth:`give_back` then returns their claims. A batch that
        cannot record its outcomes stops without `in_flight_too`: a request with the
        provider ends as it would have (one cut off could land there all the same, and an
        email cannot be looked for), and its outcome is written, or released, at the end."""
        self.stopped = True
        self.in_flight_too = self.in_flight_too or in_flight_too
        for delivery_id, single in self.singles.items():
            if delivery_id in self.waiting \
                    and self.claims[delivery_id] not in FINAL_OR_BUSY:  # those send nothing
                single.stop(self.in_flight_too)

    def _cut_off(self, delivery_id: str, error: BaseException) -> bool:
        return isinstance(error, asyncio.CancelledError) and self.singles[delivery_id].cut

    async def give_back(self) -> None:
        """Return the claims of the deliveries cut off by the stop: one claimed fresh and
        cut off before its turn is as if never claimed (nobody handed it over), and the
        next run sends it without asking the provider; one a dead worker left (an orphan),
        or one cut off waiting to try again (its failed attempt may have reached the
        provider), is an orphan for the next run; one cut off with the provider too, once
        its request would have landed (``handover.give_back_landing``). Redis away: they
        stay this worker's until its heartbeat ends."""
        landing = [r for r in self.cut.values() if self.singles[r.id].cut_in_flight]
        cut = [r for r in self.cut.values() if not self.singles[r.id].cut_in_flight]
        # (turned: an attempt was made, so it is looked for at the provider)
        untouched = [self.claims[r.id] == "fresh" and not self.singles[r.id].turned
                     for r in cut]
        try:
            await give_back_landing(self.rt, landing)  # they may still land at the provider
            await give_back(self.rt, cut, untouched)
        except Exception as exc:
            log.warning("claims not given back at the stop: another worker takes them once "
                        "this one's heartbeat is gone", deliveries=len(cut) + len(landing),
                        error=repr(exc))

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
                await self.writes.write(taken)
            except Exception:
                # Unrecorded: nothing more is handed over (see kept_up), from now, not
                # once the release's own round trip (as slow as the write, when Redis hangs)
                # has ended.
                self.stop(in_flight_too=False)
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
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                # A timer, not asyncio.wait_for: that makes a task of every wait, and a
                # fan-out's batches wait a few thousand times a second between them. On the
                # clock every run shares, so that their writes go together.
                alarm = loop.call_at(next_tick(loop.time()), self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    alarm.cancel()
                self.wake.clear()
                try:
                    await self.flush()
                    now = time.monotonic()
                    if now - left_checked >= LEAVERS_EVERY_S:
                        await self.refresh()
                        checked = left_checked = now
                    elif now - checked >= WITHDRAWN_EVERY_S:
                        await self.refresh(withdrawn_only=True)
                        checked = now
                except Exception as exc:
                    # Outcomes that cannot be written, or a withdrawal and leavers that
                    # cannot be checked: nothing more is handed over, as at the worker's
                    # stop (what waits for its turn is given back; what is with the
                    # provider ends), and the batch fails once its hand-overs under way
                    # have ended. Going on blind would hand over the rest of the batch
                    # (minutes, at a provider's rate) unrecorded, and past a withdrawal.
                    log.warning("batch stopped: its outcomes could not be written, or who "
                                "is still wanted could not be checked",
                                statement=self.statement_id, error=repr(exc))
                    self.stop(in_flight_too=False)
                    raise

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
                try:
                    await self.flush()
                finally:
                    # Whatever ended the batch (a failure too): what the stop cut off is
                    # given back, once its outcomes before are written.
                    if self.cut:
                        await self.give_back()
