"""Send again the reports the outbox kept but the intake has not taken in: the broker may
have lost them (the embedded one keeps nothing across its own restart).

A report not taken in yet may also still be on `reports`, queued behind a backlog: a burst
of reports takes the worker longer to read than the outbox's wait. Sent again then, it would
be read twice (the second time for nothing) and make the backlog longer still. So the
resend first notes where the topic ends (a mark), and sends the reports due at that moment
only once the workers' consumer group has read up to the mark on every partition, or the
topic now ends before it (the broker lost what it held): whatever of those reports is still
not taken in then was not on the topic. With no backlog the mark is reached at once. When
the broker cannot say (it is away, or does not answer the question), the reports are sent
as before: a duplicate is read for nothing, a lost report is never read. (Tansu answers
"where does the topic end" with the start of its last batch + 1, a little short of the
end: a report in that batch may still be sent again while it waits, and read twice.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from coordinator import observability as obs
from coordinator import topics
from coordinator.broker import bootstrap_servers, kafka_security
from coordinator.events import Report
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis

log = obs.get_logger("filing")
ASK_TIMEOUT_S = 5.0
"""How long the broker gets to say where `reports` ends and how far the group has read."""
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


class ReportsBacklog:
    """Where `reports` ends and how far the worker group has read it, asked of the broker
    by a consumer of the group's id that never joins it (so it takes no partition and
    starts no rebalance)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.kafka_url
        self.settings = settings
        self.topic = topics.topic_name(topics.REPORTS, settings.topic_prefix)
        self._consumer: AIOKafkaConsumer | None = None

    async def ends(self) -> dict[int, int]:
        """Partition -> the offset the topic ends at now."""
        consumer = await self._open()
        await consumer.topics()  # the topic's partitions, as the broker has them now
        partitions = [TopicPartition(self.topic, p)
                      for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
        if not partitions:
            raise LookupError(f"the broker has no topic {self.topic}")
        return {tp.partition: at for tp, at in (await consumer.end_offsets(partitions)).items()}

    async def read(self, mark: Offsets) -> tuple[dict[int, int], dict[int, int | None]]:
        """Where the topic ends now, and the group's committed offset on each partition of
        `mark` (None: it never committed there)."""
        consumer = await self._open()
        committed = {p: await consumer.committed(TopicPartition(self.topic, p)) for p in mark}
        return await self.ends(), committed

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            assert self.settings.kafka_url
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers(self.settings.kafka_url),
                group_id=self.settings.app_id, enable_auto_commit=False,
                request_timeout_ms=int(ASK_TIMEOUT_S * 1000), **kafka_security(self.settings))
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()  # what it opened before failing
                raise
            self._consumer = consumer
        return self._consumer


class ReportResend:
    """The worker's resend of outboxed reports, a round at a time, each report sent only
    once the group has read past the backlog it may be queued in (see the module's text).
    Without a `backlog` (or when the broker cannot say) a due report is sent at once."""

    def __init__(self, redis: Redis, keys: Keys, send: Callable[[str, bytes], Awaitable[None]],
                 wait_s: float, backlog: ReportsBacklog | None = None) -> None:
        self.redis, self.keys, self.send = redis, keys, send
        self.wait_s, self.backlog = wait_s, backlog
        self.mark: Offsets | None = None
        self.marked_at = 0.0  # the reports due then are sent once the group passes the mark
        self.held = 0  # reports due but held back behind the backlog, at the last round
        self.moved: dict[int, tuple[int | None, float]] = {}  # committed, since when

    async def round(self, now: float | None = None) -> int:
        """Send the reports due (as of the mark) once the group has read past it; how
        many were sent."""
        now = time.time() if now is None else now
        if self.backlog is None:
            return await resend_due(self.redis, self.keys, self.send, now - self.wait_s, now)
        if self.mark is None:
            if not await self.redis.zcount(self.keys.outbox_times(), "-inf", now - self.wait_s):
                self.held = 0
                return 0
            self.mark, self.marked_at = await self._ask(self.backlog.ends(), {}), now
            self.moved = {}
        if self.mark and not await self._passed(self.mark, now):
            self.held = await self.redis.zcount(self.keys.outbox_times(), "-inf",
                                                self.marked_at - self.wait_s)
            return 0
        due_before, self.mark, self.held = self.marked_at - self.wait_s, None, 0
        return await resend_due(self.redis, self.keys, self.send, due_before, now)

    async def _passed(self, mark: Offsets, now: float) -> bool:
        """Whether the group has read past `mark`, its stalled partitions apart (True when
        the broker cannot say)."""
        assert self.backlog is not None
        answer = await self._ask(self.backlog.read(mark), None)
        if answer is None:
            return True
        ends, committed = answer
        for p, at in committed.items():
            if self.moved.get(p, (-1, 0.0))[0] != at:
                self.moved[p] = (at, now)
        stalled = {p for p, (_, since) in self.moved.items() if now - since >= STALLED_AFTER_S}
        return read_past(mark, ends, committed, stalled)

    async def _ask(self, question: Awaitable[T], otherwise: T) -> T:
        """The broker's answer, or `otherwise` (send as before) when it cannot say."""
        try:
            return await asyncio.wait_for(question, ASK_TIMEOUT_S)
        except Exception as exc:
            log.warning("the broker did not say how far the reports were read; outboxed "
                        "reports due are sent again all the same", error=repr(exc))
            if self.backlog is not None:
                with contextlib.suppress(Exception):  # a fresh connection next time
                    await self.backlog.close()
            return otherwise


async def resend_due(redis: Redis, keys: Keys, send: Callable[[str, bytes], Awaitable[None]],
                     due_before: float, now: float, limit: int = 500) -> int:
    """Put again on `reports` every outboxed report kept since before `due_before` and not
    taken in (at most `limit`), its wait starting again at `now`. Returns how many were
    sent."""
    due = await redis.zrangebyscore(keys.outbox_times(), "-inf", due_before, start=0, num=limit)
    sent = 0
    for report_id in due:
        raw = await redis.hget(keys.outbox(), report_id)
        if raw is None:
            await redis.zrem(keys.outbox_times(), report_id)
            continue
        try:
            report = Report.model_validate_json(raw)
        except ValueError as exc:  # another Loa's, or damaged: the others still go
            log.error("outboxed report cannot be read; left for a person", report=report_id,
                      error=str(exc)[:300],
                      remove=f"redis-cli HDEL {keys.outbox()} {report_id}")
            await redis.zadd(keys.outbox_times(), {report_id: now}, xx=True)
            continue
        await send(report.correlation_key(), raw.encode())
        await redis.zadd(keys.outbox_times(), {report_id: now}, xx=True)
        sent += 1
    return sent
