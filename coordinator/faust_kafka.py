"""faust's Kafka transport, with the consumer's fetch wait ours to set and paced.

faust 0.15 builds the worker's aiokafka consumer with ``fetch_max_wait_ms=1500`` and no way
to change it. Tansu does not answer a fetch of empty partitions as soon as a record lands
(it looks again only after part of the wait), so on Tansu each hop between agents cost
about 0.7 s. A real Kafka answers as soon as a record lands.

Here the wait is ``Settings.broker_fetch_wait_ms`` (default 10 ms) while records flow or
an approval's answer is awaited, and ``Settings.broker_idle_fetch_wait_ms`` (default 50 ms)
once none has come for a second and none is awaited (:class:`FetchPace`). Idle at 10 ms,
Tansu and the worker used a fifth and a tenth of a core on empty fetches (8 % and 3 % at
50 ms). The price is the first record after a quiet second: on Tansu it waits longer for
the fetch in flight (a bare consumer measured p50 9 ms, p99 29 ms, against 5 and 15 ms at
10 ms).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
import faust
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from coordinator import observability as obs

log = obs.get_logger("worker")


class FetchPace:
    """How long the next fetch may wait at the broker: `busy_ms` while records flow (one
    came within `linger_s`) or while one is expected (`expecting`: the worker sets it while
    an approval request awaits an approver, for the answer's hop), else `idle_ms`."""

    def __init__(self, busy_ms: int, idle_ms: int, linger_s: float = 1.0) -> None:
        self.busy_ms, self.idle_ms, self.linger_s = busy_ms, max(busy_ms, idle_ms), linger_s
        self._last_records = float("-inf")
        # Set in the worker's event loop, read in the consumer's thread: one attribute,
        # written whole.
        self.expecting = False

    def after(self, got_records: bool, now: float) -> int:
        """A fetch came back (with records or not) at `now` (monotonic seconds): the wait of
        the next one. Pure but for the remembered moment and `expecting`."""
        if got_records:
            self._last_records = now
        busy = self.expecting or now - self._last_records < self.linger_s
        return self.busy_ms if busy else self.idle_ms


def pace(fetcher: Any, fetch_pace: FetchPace) -> None:
    """Have a started aiokafka Fetcher take each fetch's wait from `fetch_pace`. Its fetch
    loop reads ``_fetch_max_wait_ms`` for every request it builds and calls
    ``_proc_fetch_request`` for every fetch, looked up each time (true when it buffered
    records, or an error for the consumer to raise: the short wait then stays on, which is
    harmless); tests/integration/test_broker_fetch.py checks the wait follows the records
    on the installed aiokafka and Tansu."""
    fetch: Callable[..., Awaitable[bool]] = fetcher._proc_fetch_request

    async def paced(*args: Any) -> bool:
        got = await fetch(*args)
        wait = fetch_pace.after(bool(got), time.monotonic())
        if wait != fetcher._fetch_max_wait_ms:
            fetcher._fetch_max_wait_ms = wait
            obs.FETCH_WAIT.set(wait / 1000)
        return got

    fetcher._proc_fetch_request = paced


def leave_from_generation_zero(coordinator: Any) -> None:
    """Have a started aiokafka GroupCoordinator leave the group at its stop from generation
    0 too. Kafka numbers a group's generations from 1, and aiokafka leaves only from there
    on; Tansu numbers them from 0, so the first worker of a fresh broker (every `loa up`'s)
    left without a word, and the next member to join waited out its session (the second
    start of a worker took 13 s instead of 5). A LeaveGroup request names the member, not
    the generation; the generation is reset right after, as aiokafka does."""
    if coordinator is None:  # no group (not the worker's consumer)
        return
    leave: Callable[[], Awaitable[None]] = coordinator._maybe_leave_group

    async def maybe_leave() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1  # past aiokafka's `> 0`: the member leaves
        await leave()

    coordinator._maybe_leave_group = maybe_leave


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_pace: FetchPace = FetchPace(1500, 1500)

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the argument as given and hands it to its Fetcher on start();
        # faust passes a constant, so the value is replaced before the consumer starts,
        # and the Fetcher is paced once start() has made it.
        consumer._fetch_max_wait_ms = self.fetch_pace.busy_ms
        start = consumer.start

        async def start_paced() -> None:
            await start()
            pace(consumer._fetcher, self.fetch_pace)
            leave_from_generation_zero(consumer._coordinator)
            obs.FETCH_WAIT.set(consumer._fetcher._fetch_max_wait_ms / 1000)

        consumer.start = start_paced
        return consumer


def transport_class(fetch_pace: FetchPace) -> type[faust_aiokafka.Transport]:
    """faust's aiokafka transport whose worker consumer waits at the broker as `fetch_pace`
    says."""
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_pace": fetch_pace})

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return thread(self, loop=self.loop, beacon=self.beacon)

    return type("Transport", (faust_aiokafka.Transport,), {"Consumer": Consumer})


class TablelessManager(TableManager):
    """faust's table manager, without the second it waits at every start for tables declared
    late: Loa keeps its state in Redis and declares none, so a worker (started, or
    restarted by `loa up` after a crash) takes its partitions a second sooner. With a table
    declared, faust's own start runs (tests/unit/test_worker_start.py holds this to the
    installed faust)."""

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
        elif not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class App(faust.App):
    """A faust App whose consumer uses :func:`transport_class`, paced by `fetch_pace`:
    `fetch_wait_ms` while records flow or one is expected, `idle_fetch_wait_ms` else."""

    def __init__(self, *args: Any, fetch_wait_ms: int, idle_fetch_wait_ms: int,
                 **kwargs: Any) -> None:
        self.fetch_pace = FetchPace(fetch_wait_ms, idle_fetch_wait_ms)
        # Told first thing when the app stops, before faust waits for the events under way
        # to be handled (its `on_before_shutdown` comes only after that wait).
        self.when_stopping: list[Callable[[], object]] = []
        # Told as a rebalance takes partitions away, before faust waits for the events under
        # way to be handled (its `on_partitions_revoked` signal comes only after that wait),
        # then again (`True`) once they are given up.
        self.when_revoking: list[Callable[[bool], object]] = []
        super().__init__(*args, TableManager=TablelessManager, **kwargs)

    async def _on_partitions_revoked(self, revoked: Any) -> None:
        self._tell_revoking(False)
        try:
            await super()._on_partitions_revoked(revoked)
        finally:
            self._tell_revoking(True)

    def _tell_revoking(self, over: bool) -> None:
        for told in self.when_revoking:
            try:
                told(over)
            except Exception as exc:  # the rebalance must go on all the same
                log.error("a rebalance hook failed", error=repr(exc))

    async def on_stop(self) -> None:
        for told in self.when_stopping:
            try:
                told()
            except Exception as exc:  # the rest of the stop must run all the same
                log.error("a stop hook failed", error=repr(exc))
        await super().on_stop()

    def _new_transport(self) -> Any:
        return transport_class(self.fetch_pace)(self.conf.broker_consumer, self)
