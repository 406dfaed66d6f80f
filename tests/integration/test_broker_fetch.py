"""The worker's consumer waits at the broker as long as Loa says, not faust's 1.5 s: briefly
while records flow, longer once they stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from coordinator import faust_kafka
from coordinator.broker import bootstrap_servers
from coordinator.embedded import free_port
from coordinator.settings import Settings
from tests.integration.factories import post_report, report_body, wait_for_approval
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


async def test_worker_consumer_waits_as_configured(stack: Stack) -> None:
    """faust hard-codes fetch_max_wait_ms=1500, and Tansu answers a fetch of empty
    partitions only after part of that wait, so each hop cost ~0.7 s. Our transport
    replaces it before the consumer starts; started against the real broker, aiokafka's
    fetcher carries our value (this breaks loudly if an aiokafka upgrade stops reading the
    attribute we set)."""
    app = faust_kafka.App("loatest-fetch-probe", broker=stack.broker.url, fetch_wait_ms=7,
                          idle_fetch_wait_ms=40, web_enabled=False, store="memory://",
                          loop=asyncio.get_running_loop())
    thread = app.consumer._thread
    consumer = thread._create_consumer(loop=asyncio.get_running_loop())
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # the thread that would have run it never started


async def test_worker_consumer_paces_its_fetches(stack: Stack) -> None:
    """Idle, the consumer's fetches wait the idle wait; a record brings back the short one,
    and so does an answer the worker expects (this breaks loudly if an aiokafka upgrade
    stops calling what `pace` wraps)."""
    servers = bootstrap_servers(stack.broker.url)
    topic = await _new_topic(stack, "pace")
    app, consumer = _worker_consumer(stack, "pace")
    thread = app.consumer._thread
    consumer.subscribe([topic])
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        fetcher = consumer._fetcher

        async def wait_becomes(ms: int) -> None:
            for _ in range(300):
                if fetcher._fetch_max_wait_ms == ms:
                    return
                # consuming, as faust's consumer thread does: aiokafka sends no fetch while
                # records it fetched are waiting to be consumed
                assert not await consumer.getmany(timeout_ms=50)
            raise AssertionError(f"the fetch wait stayed {fetcher._fetch_max_wait_ms} ms")

        for value in (b"one", b"two"):
            await producer.send_and_wait(topic, value)
            record = await asyncio.wait_for(consumer.getone(), 60)
            assert record.value == value
            await wait_becomes(7)  # records flow
            await wait_becomes(40)  # a quiet second later
        app.fetch_pace.expecting = True  # as the worker sets it while an approval is pending
        await wait_becomes(7)
        app.fetch_pace.expecting = False
        await wait_becomes(40)
    finally:
        await producer.stop()
        await consumer.stop()
        thread.thread_loop.close()


def test_default_waits() -> None:
    """Loa's defaults: 10 ms while records flow (on Tansu, about what a record landing
    beside a fetch in flight waits), 50 ms once they stop."""
    settings = Settings(_env_file=None)
    assert (settings.broker_fetch_wait_ms, settings.broker_idle_fetch_wait_ms) == (10, 50)


def test_a_pending_approval_keeps_the_worker_listening(make_stack: Callable[..., Stack]
                                                       ) -> None:
    """With 10 ms while records flow and 50 ms when idle (as `loa up` runs): while the
    approval request waits for its approver, the worker's fetch wait stays 10 ms however
    quiet it is (the answer's hop does not pay the idle wait); once it is approved and the
    fan-out is over, 50 ms again. Read from the worker's /metrics."""
    port = free_port()
    stack = make_stack(LOA_BROKER_FETCH_WAIT_MS="10", LOA_BROKER_IDLE_FETCH_WAIT_MS="50",
                       LOA_WORKER_METRICS_PORT=str(port))
    stack.start_worker_and_web()

    def fetch_wait() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return next(sample.value for family in text_string_to_metric_families(text)
                    for sample in family.samples if sample.name == "loa_fetch_wait_seconds")

    wait_for(lambda: fetch_wait() == 0.05 or None, 30, "an idle worker's 50 ms")
    report_id = post_report(stack, report_body("hn-ba-dinh-kim-ma"))
    incident_id, approval = wait_for_approval(stack, report_id)
    time.sleep(2.5)  # quiet: no record for longer than a second
    assert fetch_wait() == 0.01
    done = stack.cli("approve", approval["id"], *stack.as_person(approval["approvers"][0]))
    assert done.returncode == 0, done.stderr
    stack.wait_for_status(incident_id, "published")
    wait_for(lambda: fetch_wait() == 0.05 or None, 30, "the idle wait after the answer")
    assert stack.redis.zcard(stack.keys.approvals_pending()) == 0


async def test_the_first_member_of_a_fresh_group_leaves_it_when_it_stops(stack: Stack) -> None:
    """Tansu numbers a group's generations from 0 where Kafka starts at 1, and aiokafka
    leaves a group only from generation 1 on: the first worker of a fresh broker stopped
    without leaving, and the next one to join waited out its session. The worker's consumer
    leaves from generation 0 too: stopped, its group has no member left."""
    topic = await _new_topic(stack, "leave")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(stack.broker.url))
    await admin.start()
    try:
        app, consumer = _worker_consumer(stack, "leave")
        thread = app.consumer._thread
        consumer.subscribe([topic])
        await consumer.start()
        try:
            for _ in range(600):  # joined: partitions assigned
                if consumer.assignment():
                    break
                await asyncio.sleep(0.05)
            assert consumer.assignment(), "never joined its group"
            assert consumer._coordinator.generation == 0  # Tansu's first generation
            assert await _members(admin, app.conf.id) == 1
        finally:
            await consumer.stop()
            thread.thread_loop.close()
        assert await _members(admin, app.conf.id) == 0, "a member is left in the group"
    finally:
        await admin.close()


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    """How many members the broker counts in `group` (DescribeGroups: error code, id,
    state, protocol type, protocol, members)."""
    [response] = await admin.describe_consumer_groups([group])
    [(error, _, _, _, _, members, *_)] = response.groups
    assert error == 0, error
    return len(members)


def _worker_consumer(stack: Stack, name: str) -> tuple[faust_kafka.App, Any]:
    """A faust app of a fresh group on the stack's broker, and its consumer as the worker's
    consumer thread makes it (not started)."""
    app = faust_kafka.App(f"loatest-{name}-{uuid.uuid4().hex[:8]}", broker=stack.broker.url,
                          fetch_wait_ms=7, idle_fetch_wait_ms=40, web_enabled=False,
                          store="memory://", loop=asyncio.get_running_loop(),
                          # as the worker's (coordinator.app); with faust's defaults the
                          # group join made a test take 32 s instead of 5
                          broker_session_timeout=6.0, broker_rebalance_timeout=6.0)
    return app, app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())


async def _new_topic(stack: Stack, name: str) -> str:
    """A new topic of one partition on the stack's broker: its name."""
    topic = f"loatest-{name}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(stack.broker.url))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    return topic
