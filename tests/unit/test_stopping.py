"""What the worker's stop and a rebalance cut off of a single delivery's hand-over
(``dispatch.stopping``): pure asyncio, no Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.dispatch import stopping as stopping_module
from coordinator.dispatch.stopping import SingleHandOver, Stopping


async def _never_turns() -> str:
    """A hand-over whose turn never comes (as at a rate limit)."""
    await asyncio.Event().wait()
    return "sent"


async def _turns(run: SingleHandOver, let_go: asyncio.Event) -> str:
    """A hand-over whose turn comes at once, then stays with the provider until `let_go`."""
    async def ask() -> bool:
        return True
    assert await run.wanted(ask)()
    await let_go.wait()
    return "sent"


async def test_a_hand_over_watched_after_a_rebalance_began_is_cut_off_before_it_starts(
        ) -> None:
    """The hold began while the delivery was being claimed: watched afterwards, it is cut
    off at once, never started (its claim is then given back as never used)."""
    stopping = Stopping()
    assert stopping.pause() == 0
    run = SingleHandOver()
    stopping.watch(run, on_topic=True)
    assert await asyncio.wait_for(run.run(_never_turns()), 1) is None
    assert run.cut and not run.turned and run.task is None


async def test_a_rebalance_leaves_a_hand_over_beside_its_handler_be() -> None:
    """A delivery handed over at once holds no partition: a rebalance neither cuts it off
    while it waits for its turn nor when it is watched during the rebalance; the stop
    does."""
    stopping = Stopping()
    run = SingleHandOver()
    stopping.watch(run, on_topic=False)
    task = asyncio.create_task(run.run(_never_turns()))
    await asyncio.sleep(0.01)
    assert stopping.pause() == 0
    await asyncio.sleep(0.01)
    assert not task.done() and not run.stopped
    late = SingleHandOver()
    stopping.watch(late, on_topic=False)  # during the rebalance
    assert not late.stopped
    assert stopping.begin() == 2
    assert await asyncio.wait_for(task, 1) is None and run.cut
    assert late.stopped


async def test_a_request_with_the_provider_ends_as_it_would_have() -> None:
    """Once the channel's turn came the stop lets the request end: its result stands."""
    stopping, let_go = Stopping(), asyncio.Event()
    run = SingleHandOver()
    stopping.watch(run, on_topic=True)
    task = asyncio.create_task(run.run(_turns(run, let_go)))
    await asyncio.sleep(0.01)
    assert stopping.begin() == 1 and not run.cut
    let_go.set()
    assert await asyncio.wait_for(task, 1) == "sent"


async def test_a_request_the_provider_does_not_answer_is_cut_off_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request with the provider that does not end (a provider that hangs) is cut off
    once it has had its grace after the rebalance began, not before: the partition it holds
    is given up within the group's rebalance timeout."""
    monkeypatch.setattr(stopping_module, "IN_FLIGHT_GRACE_S", 1.0)
    stopping = Stopping()
    run = SingleHandOver()
    stopping.watch(run, on_topic=True)
    task = asyncio.create_task(run.run(_turns(run, asyncio.Event())))  # never let go
    await asyncio.sleep(0.01)
    started = time.monotonic()
    assert stopping.pause() == 1
    await asyncio.sleep(0.05)
    assert not task.done() and not run.cut  # within its grace
    assert await asyncio.wait_for(task, 5) is None
    assert run.cut and run.cut_in_flight and time.monotonic() - started >= 1.0


async def test_a_failed_attempt_after_the_stop_cuts_itself_off_at_its_backoff() -> None:
    """A request with the provider as the stop came, which then fails transiently: its
    wait before the next attempt cuts it off (it is not tried again)."""
    stopping, let_go = Stopping(), asyncio.Event()
    run = SingleHandOver()
    stopping.watch(run, on_topic=True)
    attempts = 0

    async def down() -> str:
        nonlocal attempts
        while True:
            attempts += 1
            await _turns(run, let_go)
            await run.backoff(30.0)

    task = asyncio.create_task(run.run(down()))
    await asyncio.sleep(0.01)
    stopping.begin()
    let_go.set()
    assert await asyncio.wait_for(task, 1) is None
    assert run.cut and attempts == 1 and not run.cut_in_flight  # its request had ended


async def test_the_workers_own_cancellation_waits_for_the_hand_over_to_unwind() -> None:
    """Cancelled itself (the worker's shutdown), the run cancels the hand-over and returns
    only once it has unwound (its `finally` ran), then passes the cancellation on."""
    unwound = asyncio.Event()

    async def hand_over() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # a connection closing
            unwound.set()
        return "sent"

    run = SingleHandOver()
    outer = asyncio.create_task(run.run(hand_over()))
    await asyncio.sleep(0.01)
    outer.cancel()
    try:
        await outer
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    assert unwound.is_set()
