"""The outbox's resend of reports on a real broker: held while the reports before it are
still being read, sent once the group has read past them, or at once when the broker
cannot say or lost what it held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from coordinator import topics
from coordinator.broker import bootstrap_servers, ensure_topics
from coordinator.embedded import Service, free_port, start_tansu
from coordinator.events import Report
from coordinator.reports.filing import record_report
from coordinator.reports.resend import (
    STALLED_AFTER_S,
    ReportResend,
    ReportsBacklog,
    resend_due,
)
from coordinator.runtime import Runtime
from coordinator.settings import Settings

pytestmark = pytest.mark.integration
WAIT_S = 10.0


@pytest.fixture
async def broker(rt: Runtime, tmp_path: Path) -> AsyncIterator[tuple[Settings, Service]]:
    """A Tansu with Loa's topics (under a prefix of this test's own), and settings for it."""
    service = start_tansu(log_path=tmp_path / "broker.log")
    settings = rt.settings.model_copy(update={"kafka_url": service.url,
                                              "topic_partitions": 2,
                                              "app_id": f"loa-{rt.keys.prefix}"})
    await ensure_topics(settings)
    yield settings, service
    service.stop()


async def fill(settings: Settings, count: int) -> None:
    """`count` events on `reports`: a backlog the group has not read."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.kafka_url or ""))
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topics.topic_name(topics.REPORTS,
                                                           settings.topic_prefix),
                                         b"{}", key=f"k{i}".encode())
    finally:
        await producer.stop()


async def read_all(settings: Settings) -> None:
    """The worker group has read the topic to its end: its offsets committed there, as
    faust commits what it has read."""
    name = topics.topic_name(topics.REPORTS, settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings.kafka_url or ""),
                                group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.commit(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


MakeReport = Callable[..., Report]


async def kept_report(rt: Runtime, make_report: MakeReport, at: float) -> Report:
    """A report kept in the outbox since `at` (not taken in)."""
    report = make_report()
    await record_report(rt.redis, rt.keys, report)
    await rt.redis.zadd(rt.keys.outbox_times(), {report.id: at})
    return report


@asynccontextmanager
async def resending(rt: Runtime, settings: Settings, limit: int = 500
                    ) -> AsyncIterator[tuple[ReportResend, list[str]]]:
    """The worker's resend against `settings`' broker, and the ids of what it sent."""
    sent: list[str] = []

    async def send(key: str, value: bytes) -> None:
        sent.append(Report.model_validate_json(value).id)

    backlog = ReportsBacklog(settings)
    try:
        yield ReportResend(rt.redis, rt.keys, send, WAIT_S, backlog, limit), sent
    finally:
        await backlog.close()


async def test_a_report_behind_a_backlog_is_held_until_the_group_reads_past_it(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport) -> None:
    settings, _ = broker
    await fill(settings, 40)
    now = time.time()
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    # kept before the mark, due while it waits: goes with it; kept after it: waits for a
    # mark of its own, though due when this one is passed
    soon = await kept_report(rt, make_report, now - WAIT_S + 1)
    later = await kept_report(rt, make_report, now + 1)
    async with resending(rt, settings) as (resend, sent):
        assert await resend.round(now, clock=0) == 0 and resend.held == 1  # 40 not read yet
        # one event a batch, each sent on its own: Tansu's "end" is then the true end
        assert resend.mark is not None and sum(resend.mark.values()) == 40
        assert await resend.round(now + 2, clock=2) == 0 and sent == []
        await read_all(settings)
        assert await resend.round(now + WAIT_S + 5, clock=4) == 2
        assert sent == [report.id, soon.id] and resend.mark is None and resend.held == 0
        # the mark of its own, passed at once: nothing unread
        assert await resend.round(now + WAIT_S + 7, clock=6) == 1 and sent[2:] == [later.id]
        assert resend.unanswered == 0  # every answer came from the broker


async def test_a_backlog_nobody_reads_holds_a_report_only_so_long(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport) -> None:
    """No worker reads the topic (or the broker counts a record it never serves): once the
    group's offsets have not moved for STALLED_AFTER_S, the report goes."""
    settings, _ = broker
    await fill(settings, 10)
    now = time.time()
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    async with resending(rt, settings) as (resend, sent):
        assert await resend.round(now, clock=0) == 0
        assert await resend.round(now + 5, clock=STALLED_AFTER_S - 1) == 0
        assert resend.held == 1
        assert await resend.round(now + 6, clock=STALLED_AFTER_S) == 1 and sent == [report.id]
        assert resend.unanswered == 0


async def test_with_nothing_unread_a_due_report_goes_at_once(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport) -> None:
    settings, _ = broker
    await fill(settings, 5)
    await read_all(settings)
    now = time.time()
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    await kept_report(rt, make_report, now - 1)  # not due yet
    async with resending(rt, settings) as (resend, sent):
        assert await resend.round(now) == 1 and resend.unanswered == 0
    assert sent == [report.id]


async def test_after_the_mark_the_reports_go_a_page_a_round_without_a_new_mark(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport) -> None:
    """Many lost at once (the broker restarted): once the mark is passed, a page of them
    each round until none is left, without waiting for a mark of their own."""
    settings, _ = broker
    now = time.time()
    kept = [await kept_report(rt, make_report, now - WAIT_S - 1 - i / 100) for i in range(7)]
    async with resending(rt, settings, limit=3) as (resend, sent):
        assert await resend.round(now) == 3  # the mark taken and passed: nothing unread
        assert resend.mark is None and resend.release_before == now
        await fill(settings, 5)  # a new mark now would hold the rest
        # rounds further apart than the wait: the first page, stamped as the mark was
        # passed, is not sent again
        assert [await resend.round(now + WAIT_S * i) for i in (1, 2)] == [3, 1]
        assert resend.release_before is None and resend.unanswered == 0
    assert sorted(sent) == sorted(r.id for r in kept)


async def test_after_the_worker_stops_a_round_sends_nothing(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport) -> None:
    """The stop closes the resend's connection: a round after it asks the broker nothing
    and sends nothing (not everything, as for a broker that cannot say), nor the rest of
    a release it was paging through; the next worker's resend has the reports."""
    settings, _ = broker
    now = time.time()
    for _ in range(3):
        await kept_report(rt, make_report, now - WAIT_S - 1)
    async with resending(rt, settings, limit=2) as (resend, sent):
        assert resend.backlog is not None
        assert await resend.round(now) == 2 and resend.release_before is not None
        await resend.backlog.close()
        assert await resend.round(now + 1) == 0  # the rest of the release: not sent
        assert await resend.round(now + WAIT_S + 2) == 0  # due again: still nothing
        assert len(sent) == 2 and resend.unanswered == 0


async def test_a_report_held_when_the_broker_restarts_empty_goes(
        rt: Runtime, broker: tuple[Settings, Service], make_report: MakeReport,
        tmp_path: Path) -> None:
    """The memory-only broker restarted with nothing: the report held behind the backlog
    it had goes (the topic ends before the mark, or the broker cannot say at first)."""
    settings, service = broker
    await fill(settings, 30)
    now = time.time()
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    async with resending(rt, settings) as (resend, sent):
        assert await resend.round(now) == 0 and resend.held == 1
        service.stop()  # the memory-only broker comes back with nothing
        again = start_tansu(port=service.port, log_path=tmp_path / "broker-again.log")
        try:
            await ensure_topics(settings)
            deadline = time.monotonic() + 30
            while not sent:  # the first rounds may find the broker still starting
                assert time.monotonic() < deadline, "not sent after the broker's restart"
                await resend.round(now + 2)
                await asyncio.sleep(0.2)
        finally:
            again.stop()
    assert sent == [report.id]


async def test_when_the_broker_cannot_say_the_report_goes_as_before(
        rt: Runtime, make_report: MakeReport) -> None:
    settings = rt.settings.model_copy(update={"kafka_url": f"kafka://127.0.0.1:{free_port()}"})
    now = time.time()
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    async with resending(rt, settings) as (resend, sent):
        assert await resend.round(now) == 1 and resend.unanswered == 1
    assert sent == [report.id]


async def test_a_report_the_broker_refuses_does_not_hold_up_the_others(
        rt: Runtime, make_report: MakeReport) -> None:
    """One report's send fails (the broker refuses it): it goes to the back of the line and
    the others behind it go; three failures in a row end the round (the broker is away)."""
    now = time.time()
    refused, *others = [await kept_report(rt, make_report, now - WAIT_S - 3 + i)
                        for i in range(3)]
    sent: list[str] = []

    async def send(key: str, value: bytes) -> None:
        report_id = Report.model_validate_json(value).id
        if report_id == refused.id:
            raise RuntimeError("MessageSizeTooLargeError")
        sent.append(report_id)

    assert await resend_due(rt.redis, rt.keys, send, now - WAIT_S, now, 500) == (2, 3)
    assert sent == [r.id for r in others]
    assert await rt.redis.zscore(rt.keys.outbox_times(), refused.id) == now

    async def away(key: str, value: bytes) -> None:
        raise RuntimeError("broker away")

    more = [await kept_report(rt, make_report, now - WAIT_S - 1) for _ in range(4)]
    with pytest.raises(RuntimeError, match="broker away"):
        await resend_due(rt.redis, rt.keys, away, now + 1 - WAIT_S, now + 1, 500)
    waits = [await rt.redis.zscore(rt.keys.outbox_times(), r.id) for r in more]
    assert sorted(waits) == [now - WAIT_S - 1, now + 1, now + 1, now + 1]  # one not tried


async def test_an_entry_that_is_not_even_text_does_not_hold_up_the_others(
        rt: Runtime, make_report: MakeReport) -> None:
    """An outbox entry that is not UTF-8 (another program's, or damaged) is left for a
    person like any unreadable one; the reports behind it go."""
    now = time.time()
    await rt.redis.hset(rt.keys.outbox(), "rep-garbled", b"\xff\xfe not text")
    await rt.redis.zadd(rt.keys.outbox_times(), {"rep-garbled": now - WAIT_S - 5})
    report = await kept_report(rt, make_report, now - WAIT_S - 1)
    sent: list[str] = []

    async def send(key: str, value: bytes) -> None:
        sent.append(Report.model_validate_json(value).id)

    assert await resend_due(rt.redis, rt.keys, send, now - WAIT_S, now, 500) == (1, 2)
    assert sent == [report.id]
    assert await rt.redis.zscore(rt.keys.outbox_times(), "rep-garbled") == now

