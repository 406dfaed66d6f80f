"""Kept work done at once, beside the handler that made it, rather than after a hop through
the broker: an opened incident's plan, a plan's prompts, a prompt's SMS or email, and the
first batches of a statement's fan-out.

The work is kept in Redis before it starts (the outbox, the pending deliveries, or the
dispatch ledger), exactly as it would be before going on its topic. Should doing it at once
fail, its message goes on that topic, whose handler retries it; should even that fail, it
is still kept, and the worker sends it again later. Work that finds no room
(:data:`LIMIT` of its kind under way) goes on its topic at once. At shutdown nothing more
starts, and what is under way gets a moment to end; what is cut off is finished after the
restart, but a fan-out's first batch goes on its topic, for a worker still running (or the
same one, restarted) to finish at once; so does a delivery the stop cut off before it
reached the provider, or unanswered there after a grace (``dispatch.stopping``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping

from coordinator import observability as obs
from coordinator import topics

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
MarkSent = Callable[[Mapping[str, tuple[str, str, bytes]]], Awaitable[object]]
LIMIT = 32
"""Pieces of work of each kind handled at once at a time (plans, prompts, deliveries and a
fan-out's first batches, per topic), as many as the deliveries' agent takes; more go through
their topic."""
log = obs.get_logger("at_once")


class AtOnce:
    """The work under way beside its handlers, with a limit per kind (by topic): plans,
    prompts, deliveries and first batches each have room for :data:`LIMIT`, and what finds none
    goes through its topic (as everything did before it was done at once), so the
    broker, not memory, holds a burst."""

    def __init__(self, send: Send, kinds: Iterable[topics.TopicSpec], mark_sent: MarkSent,
                 limit: int = LIMIT, hand_on: Iterable[topics.TopicSpec] = ()) -> None:
        self.send = send
        self.mark_sent = mark_sent  # `outbox.note_sent`: a kept message went on its topic
        self.tasks: set[asyncio.Task[None]] = set()
        self.gates = {spec.name: asyncio.Semaphore(limit) for spec in kinds}
        self.closing = False  # shutting down: nothing more is started
        # Kinds whose work cut off at shutdown goes on its topic (the broker is still up),
        # for another worker to finish at once, rather than waiting in Redis for a later
        # round: a fan-out's first batches, which only a stalled fan-out sends again.
        self.hand_on = {spec.name for spec in hand_on}

    async def start(self, work: Coroutine[None, None, None], spec: topics.TopicSpec,
                    key: str, value: bytes, kept_as: str | None = None) -> None:
        """Start kept `work` (whose message on `spec` would be `key`, `value`, kept in the
        outbox as `kept_as` if it is kept there) beside the caller; with :data:`LIMIT`
        pieces of its kind under way already, put it on `spec` instead, whose handler takes
        it in turn. The caller never waits for room: a prompt's SMS waiting for the rate
        limit holds up neither its prompt's handler, nor the plan behind it, nor the intake
        of the next report."""
        gate = self.gates[spec.name]
        if self.closing:  # kept in Redis: finished after the restart
            work.close()
            if spec.name in self.hand_on:
                await self._on_topic(spec, key, value, "shutting down", kept_as)
            return
        if gate.locked():
            work.close()
            await self._on_topic(spec, key, value, "no room at once", kept_as)
            return
        await gate.acquire()  # free: it does not wait

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                await self._on_topic(spec, key, value, f"failed at once: {exc!r}", kept_as)
            except asyncio.CancelledError:
                if spec.name in self.hand_on:
                    await self._on_topic(spec, key, value, "cut off at shutdown", kept_as)
                raise

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: work.close())  # cancelled before it began: no warning
        task.add_done_callback(lambda _: gate.release())  # however it ended

    async def _on_topic(self, spec: topics.TopicSpec, key: str, value: bytes, why: str,
                        kept_as: str | None) -> None:
        if why.startswith("failed"):
            log.warning("work goes on its topic", topic=spec.name, key=key, why=why)
        else:
            log.info("work goes on its topic", topic=spec.name, key=key, why=why)
        try:
            await self.send(spec, key, value)
            if kept_as is not None:  # sent: the drain waits for its consumer from now on
                await self.mark_sent({kept_as: (spec.name, key, value)})
        except Exception as exc:  # kept in Redis: the worker's rounds resend it
            log.warning("not on its topic (or not noted so); kept for the next round",
                        topic=spec.name, key=key, error=repr(exc))

    async def finish(self, timeout_s: float) -> int:
        """At shutdown: start nothing more, and wait up to `timeout_s` for what is under way
        (what it would start meanwhile stays kept); how many were cut off (each is kept in
        Redis, and finished after the restart; one of a `hand_on` kind also goes on its
        topic)."""
        self.closing = True
        deadline = time.monotonic() + timeout_s
        while self.tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self.tasks), timeout=left)
        cut = set(self.tasks)
        for task in cut:
            task.cancel()
        if cut:  # their own `finally` blocks run before the channels close
            await asyncio.wait(cut, timeout=1.0)
        return len(cut)
