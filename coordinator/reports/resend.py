"""Send again the reports the outbox kept but the intake has not taken in: the broker may
have lost them (the embedded one keeps nothing across its own restart).

A report not taken in yet may also still be on `reports`, queued behind a backlog: a burst
of reports takes the worker longer to read than the outbox's wait. Sent again then, it would
be read twice (the second time for nothing) and make the backlog longer still. So the
resend first notes where the topic ends (a mark), and sends the reports due at that moment
only once the workers' consumer group has read up to the mark on every partition, or the
topic now ends before it (the broker lost what it held): whatever of those reports is still
not taken in then was not on the topic. With no backlog the mark is reached as soon as the
group has committed what it read (faust commits every 2.8 s). A partition whose committed
offset has not moved for :data:`STALLED_AFTER_S` is not waited for; and when the broker
cannot say (it is away, or does not answer the question), the reports are sent as before:
a duplicate is read for nothing, a lost report is never read. (Tansu answers "where does
the topic end" with the start of its last batch + 1, a little short of the end: a report
in that batch may still be sent again while it waits, and read twice.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from coordinator import observability as obs
from coordinator import topics
from coordinator.broker import bootstrap_servers, kafka_security
from coordinator.errors import LoaError
from coordinator.events import Report
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis

log = obs.get_logger("filing")
ASK_TIMEOUT_S = 5.0
"""How long the broker gets to say where `reports` ends and how far the group has read."""
REQUEST_TIMEOUT_MS = 4_000
"""aiokafka's own wait for one answer: within :data:`ASK_TIMEOUT_S`."""
GIVE_UP_AFTER = 3
"""Sends failed in a row after which a round stops (the broker is away)."""
SAY_EVERY_S = 60.0
"""A broker that cannot say is said in the log at most this often."""
STALLED_AFTER_S = 10.0
"""A partition whose committed offset has not moved for this long, short of the mark, is not
waited for: the workers read nothing there (none is running, or the broker holds a record
it does not serve: Tansu after its restart may count one that no fetch returns). faust
commits what it has read every 2.8 s."""
Offsets = Mapping[int, int]
T = TypeVar("T")


def read_past(mark: Offsets, ends: Offsets, committed: Mapping[int, int | None],
              stalled: Set[int] = frozenset()) -> bool:
    """Whether the group has read everything that was on the topic at `mark` (partition ->
    the offset it ended at then): on each partition its committed offset reached the mark,
    or the partition now ends before it (the broker lost what it held), or it is `stalled`
    (the group's offset there has not moved for :data:`STALLED_AFTER_S`). A partition the
    group never committed on has read nothing. Pure."""
    return all(p in stalled or ends.get(p, 0) < at or (committed.get(p) or 0) >= at
               for p, at in mark.items())


class BacklogClosed(LoaError):
    """The worker is stopping: the resend asks the broker nothing more."""


class ReportsBacklog:
    """Where `reports` ends and how far the worker group has read it, asked of the broker
    by a consumer of the group's id that never subscribes (so it never joins the group,
    takes no partition and starts no rebalance)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.kafka_url
        self.settings = settings
        self.topic = topics.topic_name(topics.REPORTS, settings.topic_prefix)
        self._consumer: AIOKafkaConsumer | None = None
        self._closed = False

    async def ends(self) -> dict[int, int]:
        """Partition -> the offset the topic ends at now."""
        consumer = await self._open()
        known = consumer.partitions_for_topic(self.topic)
        if known is None:  # not in the metadata the consumer keeps: ask for the topic by
            # name, as aiokafka's subscribe does (an unnamed metadata request means "every
            # topic" to Tansu but "none" to Kafka); asked again while the broker lacks it
            await consumer._client.add_topic(self.topic)
            known = consumer.partitions_for_topic(self.topic)
            if known is None:
                await consumer._client.force_metadata_update()
                known = consumer.partitions_for_topic(self.topic)
        if not known:
            raise LookupError(f"the broker has no topic {self.topic}")
        partitions = [TopicPartition(self.topic, p) for p in sorted(known)]
        return {tp.partition: at for tp, at in (await consumer.end_offsets(partitions)).items()}

    async def read(self, mark: Offsets, ends: Offsets | None = None
                   ) -> tuple[Offsets, dict[int, int | None]]:
        """Where the topic ends (`ends` when just asked), and the group's committed offset
        on each partition of `mark` (None: it never committed there)."""
        consumer = await self._open()
        committed = {p: await consumer.committed(TopicPartition(self.topic, p)) for p in mark}
        return (await self.ends() if ends is None else ends), committed

    @property
    def closed(self) -> bool:
        """Whether the worker stops (:meth:`close`)."""
        return self._closed

    async def close(self) -> None:
        """Disconnect for good (the worker stops): a round still running asks nothing
        more (:class:`BacklogClosed`)."""
        self._closed = True
        await self.reconnect()

    async def reconnect(self) -> None:
        """Drop the connection: the next question opens a fresh one."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def _open(self) -> AIOKafkaConsumer:
        if self._closed:
            raise BacklogClosed
        if self._consumer is None:
            assert self.settings.kafka_url
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers(self.settings.kafka_url),
                group_id=self.settings.app_id, enable_auto_commit=False,
                request_timeout_ms=REQUEST_TIMEOUT_MS, **kafka_security(self.settings))
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()  # what it opened before failing
                raise
            if self._closed:  # closed while it connected
                await consumer.stop()
                raise BacklogClosed
            self._consumer = consumer
        return self._consumer


class ReportResend:
    """The worker's resend of outboxed reports, a round at a time, each report sent only
    once the group has read past the backlog it may be queued in (see the module's text);
    when the broker cannot say, a due report is sent at once."""

    def __init__(self, redis: Redis, keys: Keys, send: Callable[[str, bytes], Awaitable[None]],
                 wait_s: float, backlog: ReportsBacklog, limit: int = 500) -> None:
        self.redis, self.keys, self.send = redis, keys, send
        self.wait_s, self.backlog, self.limit = wait_s, backlog, limit
        self.mark: Offsets | None = None
        self.marked_at = 0.0  # the reports kept before then are sent once the mark is passed
        self.release_before: float | None = None  # passed: sent a page a round, up to here
        self.held = 0  # reports due but held back behind the backlog, at the last round
        self.unanswered = 0  # questions the broker did not answer (the reports went anyway)
        # each partition's committed offset and since when (monotonic) it has not moved;
        # kept across marks only for those whose stall let the last mark pass
        self._moved: dict[int, tuple[int | None, float]] = {}
        self._stuck: set[int] = set()
        self._said_at = -SAY_EVERY_S

    async def round(self, now: float | None = None, clock: float | None = None) -> int:
        """Send what is due: once the group has read past the mark, the reports kept since
        before it (and due), a page (`limit`) a round until none is left; else take a
        mark when reports are due. `now`: wall time (the outbox's); `clock`: monotonic
        (how long a partition has not moved). How many were sent; none once the worker
        stops (the next worker's resend has them)."""
        now = time.time() if now is None else now
        clock = time.monotonic() if clock is None else clock
        try:
            if self.release_before is None:
                due = await self.redis.zcount(self.keys.outbox_times(), "-inf",
                                              f"({now - self.wait_s}")
                if not await self._passed(due, now, clock):
                    return 0
                self.release_before = self.marked_at
        except BacklogClosed:
            return 0
        if self.backlog.closed:  # the worker stops (while paging, or during the round)
            return 0
        # Kept before the mark (not at it: a page sent as the mark was taken and passed in
        # one round is stamped then) and due.
        before = min(now - self.wait_s, self.release_before)
        sent, looked = await resend_due(self.redis, self.keys, self.send, before, now,
                                        self.limit)
        if looked < self.limit:
            self.release_before = None
        return sent

    async def _passed(self, due: int, now: float, clock: float) -> bool:
        """Whether the group has read past the mark (taken now if there is none and `due`
        reports are), its stalled partitions apart; True when the broker cannot say."""
        if not due:
            self.mark, self.held = None, 0
            return False
        ends: Offsets | None = None
        if self.mark is None:
            ends = await self._ask(self.backlog.ends())
            if ends is None:
                self.marked_at, self.held = now, 0
                return True
            self.mark, self.marked_at = ends, now
            self._moved = {p: m for p, m in self._moved.items() if p in self._stuck
                           and p in ends}
        answer = await self._ask(self.backlog.read(self.mark, ends))
        if answer is None:
            self.mark, self.marked_at, self.held = None, now, 0
            return True
        ends, committed = answer
        for p, at in committed.items():
            if self._moved.get(p, (-1, 0.0))[0] != at:
                self._moved[p] = (at, clock)
        stalled = {p for p, (_, since) in self._moved.items()
                   if p in self.mark and clock - since >= STALLED_AFTER_S}
        if read_past(self.mark, ends, committed, stalled):
            self._stuck = {p for p in stalled if not read_past({p: self.mark[p]}, ends,
                                                               committed)}
            self.mark, self.held = None, 0
            return True
        self.held = await self.redis.zcount(self.keys.outbox_times(), "-inf",
                                            f"({min(now - self.wait_s, self.marked_at)}")
        return False

    async def _ask(self, question: Awaitable[T]) -> T | None:
        """The broker's answer, or None (send as before) when it cannot say; raises
        :class:`BacklogClosed` once the worker stops."""
        try:
            return await asyncio.wait_for(question, ASK_TIMEOUT_S)
        except BacklogClosed:
            raise
        except Exception as exc:
            if self.backlog.closed:  # cut off by the stop
                raise BacklogClosed from exc
            self.unanswered += 1
            if time.monotonic() - self._said_at >= SAY_EVERY_S:
                self._said_at = time.monotonic()
                log.warning("the broker did not say where `reports` ends or how far the "
                            "workers read it; outboxed reports due are sent again all the "
                            "same", error=repr(exc), unanswered=self.unanswered)
            # a connection that broke or hangs: a fresh one next time
            if isinstance(exc, KafkaConnectionError | ConnectionError | TimeoutError
                          | KafkaTimeoutError):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.backlog.reconnect(), ASK_TIMEOUT_S)
            return None


async def resend_due(redis: Redis, keys: Keys, send: Callable[[str, bytes], Awaitable[None]],
                     due_before: float, now: float, limit: int) -> tuple[int, int]:
    """Put again on `reports` the outboxed reports kept since before `due_before` (not at
    it) and not taken in, at most `limit` looked at, each one's wait starting again at
    `now`. Returns (how many were sent, how many were looked at); raises the error of
    the :data:`GIVE_UP_AFTER`-th send in a row that failed."""
    due = await redis.zrangebyscore(keys.outbox_times(), "-inf", f"({due_before}", start=0,
                                    num=limit)
    sent = failed_in_a_row = 0
    for report_id in due:
        try:  # (not UTF-8, the client cannot even decode it: as damaged as unreadable)
            raw = await redis.hget(keys.outbox(), report_id)
            if raw is None:
                await redis.zrem(keys.outbox_times(), report_id)
                continue
            report = Report.model_validate_json(raw)
        except ValueError as exc:  # another Loa's, or damaged: the others still go
            log.error("outboxed report cannot be read; left for a person", report=report_id,
                      error=str(exc)[:300],
                      remove=f"redis-cli HDEL {keys.outbox()} {report_id}")
            await redis.zadd(keys.outbox_times(), {report_id: now}, xx=True)
            continue
        # Its wait starts again whether the send goes through or not: one the broker
        # refuses for good goes to the back of the line rather than hold up the others.
        await redis.zadd(keys.outbox_times(), {report_id: now}, xx=True)
        try:
            await send(report.correlation_key(), raw.encode())
        except Exception as exc:
            failed_in_a_row += 1
            if failed_in_a_row >= GIVE_UP_AFTER:  # the broker is away: the next round
                raise
            log.warning("outboxed report not sent again; it waits its turn",
                        report=report_id, error=repr(exc))
            continue
        failed_in_a_row = 0
        sent += 1
    return sent, len(due)
