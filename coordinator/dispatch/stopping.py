"""What a worker's stop, or a rebalance, cuts off: the hand-overs under way that have not
reached the provider yet, a batch's (``dispatch.batch_run``) and a single delivery's
(:class:`SingleHandOver`), so that neither waits for the rest of a batch at the provider's
rate nor for the retries of a provider that is down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
IN_FLIGHT_GRACE_S = 3.0
"""How long a request already with the provider may go on once the stop or a rebalance has
begun, before it is cut off too. Under the consumer group's rebalance timeout (6 s): a
provider that hangs (the twilio SDK waits 10 s, an SMTP step 30 s) must not hold the
group's rebalance past it, nor the worker's stop. Such a delivery may still land at the
provider: every claim of it is `busy` a while longer (``handover.give_back_landing``)
before the next run looks for it there."""


class Cuttable(Protocol):
    """A hand-over under way that the stop can cut off."""

    def stop(self) -> None: ...


class Stopping:
    """A worker's stop, told to the hand-overs it runs. Each then hands nothing more over: a
    delivery still waiting for its turn (at a batch's gate or the rate limit) is cut off
    and given back, and so is one between two attempts after a transient failure (given
    back as possibly with the provider: the next run looks for it there first); one the
    provider is being asked about may end its request as it would have, and is cut off
    before trying again. So a stop takes as long as the requests in flight, not as long as
    the rest of a batch at the provider's rate (minutes, at a few SMS a second), nor as
    long as the retries of a provider that is down (up to 15.5 s of waits for six
    attempts). A request the provider has not answered within :data:`IN_FLIGHT_GRACE_S`
    is cut off as well.

    A rebalance (:meth:`pause`) cuts off the same way what holds a partition: batches, and
    single deliveries of a topic's events. A single delivery handed over at once, beside
    its handler (a prompt's SMS), holds no partition and is cut off only by the stop."""

    def __init__(self) -> None:
        self.begun = False
        self.paused = False  # a rebalance is under way (see pause)
        self.runs: set[Cuttable] = set()  # cut off at the stop and at a rebalance
        self.beside: set[Cuttable] = set()  # cut off at the stop only

    def begin(self) -> int:
        """From now on, nothing more is handed over; how many hand-overs (batches, single
        deliveries) were under way."""
        self.begun = True
        return _stop(self.runs) + _stop(self.beside)

    def pause(self) -> int:
        """A rebalance: the hand-overs under way of a topic's events stop as at a stop, and
        so does any that starts before :meth:`resume`; each goes back on its topic, for the
        partition's owner after the rebalance. Faust gives partitions up only once the
        events under way are handled: a batch at a few SMS a second (minutes) held the
        whole consumer group's rebalance, past its timeout, and so did a single delivery
        waiting out a provider's errors (up to 15.5 s). How many were under way."""
        self.paused = True
        return _stop(self.runs)

    def resume(self) -> None:
        """The rebalance is over: hand-overs run again."""
        self.paused = False

    @property
    def holding(self) -> bool:
        """Whether a batch, or a single delivery of a topic's event, must not start now
        (the worker stops, or a rebalance is on)."""
        return self.begun or self.paused

    def holding_for(self, on_topic: bool) -> bool:
        """:attr:`holding`, for a delivery of a topic's event (`on_topic`) or one handed over
        at once (only the stop holds it)."""
        return self.holding if on_topic else self.begun

    def watch(self, run: Cuttable, on_topic: bool) -> None:
        """Cut `run` off at the stop, and at a rebalance if it is a topic's event's; at once
        if that has begun already (while its delivery was being claimed, say)."""
        (self.runs if on_topic else self.beside).add(run)
        if self.holding_for(on_topic):
            run.stop()

    def forget(self, run: Cuttable) -> None:
        """`run` ended."""
        self.runs.discard(run)
        self.beside.discard(run)


def _stop(runs: set[Cuttable]) -> int:
    for run in list(runs):
        run.stop()
    return len(runs)


class SingleHandOver:
    """One single delivery's hand-over (a prompt, a code, an alert) as the stop sees it: cut
    off before its channel's turn comes (at the rate limit), or between two attempts (the
    wait, the look at the provider, the rate limit again); once the channel has asked
    whether it is still wanted (the last step before the provider's request), that request
    may end as it would have, for :data:`IN_FLIGHT_GRACE_S`, and a transient failure then
    cuts it off before it tries again."""

    def __init__(self) -> None:
        self.turned = False  # the channel's turn came: the provider may have it
        self.retrying = False  # between a failed attempt and the next one's turn
        self.stopped = False
        self.cut = False
        self.cut_in_flight = False  # cut off while its request was with the provider
        self.task: asyncio.Task[Any] | None = None
        self._grace: asyncio.TimerHandle | None = None  # until an unanswered request is cut

    def wanted(self, ask: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        """The channel's last question before the hand-over (`ask`), marking its turn."""
        async def asked() -> bool:
            self.turned, self.retrying = True, False
            return await ask()
        return asked

    async def backoff(self, seconds: float) -> None:
        """The wait before the next attempt; one that fails after the stop cuts itself off
        here."""
        self.retrying = True
        if self.stopped:
            self.cut = True
            raise asyncio.CancelledError
        await asyncio.sleep(seconds)

    def stop(self, in_flight_too: bool = True) -> None:
        """Cut the hand-over off; one whose request is with the provider, once that request
        has had :data:`IN_FLIGHT_GRACE_S` to end (unless not `in_flight_too`: it ends as it
        would have, and cuts itself off before trying again)."""
        self.stopped = True
        if self.task is None or self.task.done():
            return
        if not self.turned or self.retrying:
            self._cut_off()
        elif in_flight_too and self._grace is None:
            task = self.task
            self._grace = task.get_loop().call_later(IN_FLIGHT_GRACE_S, self._cut_in_flight)
            task.add_done_callback(lambda _: self._grace.cancel() if self._grace else None)

    def _cut_in_flight(self) -> None:
        if self.task is not None and not self.task.done():
            self.cut_in_flight = self.turned and not self.retrying
            self._cut_off()

    def _cut_off(self) -> None:
        if self.task is not None and not self.task.done():
            self.cut = True
            self.task.cancel()

    async def run(self, work: Coroutine[Any, Any, T]) -> T | None:
        """What `work` (the hand-over) came to, or None when the stop cut it off. Cancelled
        itself (the worker's own shutdown), it cancels `work` too, and passes the
        cancellation on once `work` has unwound (its connection closed, say)."""
        if self.stopped:
            work.close()
            self.cut = True
            return None
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(work)
        self.task = task
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait([task])
            raise
        if self.cut and task.cancelled():
            return None
        return task.result()
