"""The faust App and its agents: the one place that wires settings, Redis and channels
(the timers beside the agents: ``coordinator.periodic``).

Agents are thin: each hands the raw value to its handler in ``coordinator.pipeline``.
A message that cannot be decoded or handled goes to `dead-letters` with its
reason, and the agent goes on with the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from coordinator import faust_kafka, topics
from coordinator import observability as obs
from coordinator.broker import bootstrap_servers, faust_credentials
from coordinator.dispatch.channels import build_channels, bulk_lane
from coordinator.errors import (
    BadEvent,
    BrokerUnavailable,
    ConfigError,
    IncidentTransitionError,
    PlaybookError,
)
from coordinator.escalation.timers import Timers
from coordinator.events import DeadLetter
from coordinator.periodic import register_periodic_work
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime
from coordinator.settings import Settings

log = obs.get_logger("worker")
Handler = Callable[[bytes], Awaitable[None]]
DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]
RETRIES = 5
DELIVERY_CONCURRENCY = 32
BATCH_CONCURRENCY = 4  # batches of one lane at once per worker (each sends several at once)
KEYED_IN_FLIGHT = 16  # events of different keys handled at once on an ordered topic
BESIDE_GRACE_S = 5.0  # at shutdown, for the prompts being handed over at once


def _stop_handing_over(pipeline: Pipeline) -> None:
    """First thing at the stop: the batches and single deliveries under way hand nothing
    more over, so faust's wait for the events under way lasts as long as the requests in
    flight."""
    under_way = pipeline.stopping.begin()
    if under_way:
        log.info("stopping: hand-overs under way give back what they have not handed over",
                 hand_overs=under_way)


def _yield_partitions(pipeline: Pipeline, over: bool) -> None:
    """A rebalance takes partitions away: the batches and single deliveries of the topics'
    events under way hand nothing more over and go back on their topics, so faust gives the
    partitions up within the requests in flight; once it has (`over`), they run again."""
    if over:
        pipeline.stopping.resume()
        return
    under_way = pipeline.stopping.pause()
    if under_way:
        log.info("rebalance: hand-overs under way go back on their topics",
                 hand_overs=under_way)


def create_app(settings: Settings, rt: Runtime) -> faust.App:
    """The faust app with every agent of the pipeline registered."""
    assert settings.kafka_url
    app = faust_kafka.App(
        settings.app_id,
        fetch_wait_ms=settings.broker_fetch_wait_ms,
        idle_fetch_wait_ms=settings.broker_idle_fetch_wait_ms,
        broker=f"kafka://{bootstrap_servers(settings.kafka_url).replace(',', ';')}",
        broker_credentials=faust_credentials(settings),  # SASL and/or TLS, or None
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",  # Tansu's "latest" is unreliable (DESIGN.md)
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # `ensure_topics` creates them, with our partition count
    )
    by_name = {
        spec.name: app.topic(topics.topic_name(spec, settings.topic_prefix), value_type=bytes,
                             key_type=bytes, value_serializer="raw", key_serializer="raw")
        for spec in topics.ALL
    }

    async def send(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        # Wait for the broker's ack: the next step is only as durable as this send.
        fut = await by_name[spec.name].send(key=key.encode(), value=value)
        await fut

    async def dead_letter(letter: DeadLetter) -> None:
        await rt.redis.xadd(rt.keys.dead_letters(), {"letter": letter.model_dump_json()},
                            maxlen=100_000, approximate=True)
        await send(topics.DEAD_LETTERS, letter.key or "", letter.to_bytes())

    async def on_timer(kind: str, approval_id: str, number: int, fraction: float) -> None:
        try:
            await pipeline.on_timer(kind, approval_id, number, fraction)
        except Exception as exc:  # a timer must never take the scheduler down; the sweep retries
            log.error("timer failed", approval=approval_id, kind=kind, error=repr(exc))

    timers = Timers(on_timer)
    channels = build_channels(settings, rt.redis, rt.keys)
    pipeline = Pipeline(rt, channels, send, timers.schedule,
                        bulk_lane(channels, settings, rt.redis, rt.keys))

    app.when_stopping.append(lambda: _stop_handing_over(pipeline))
    app.when_revoking.append(lambda over: _yield_partitions(pipeline, over))

    @app.on_before_shutdown.connect
    async def close_channels(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # Work handled at once gets a moment to finish (what is cut off is kept in Redis,
        # and finished after the restart; a fan-out's first batch goes on its topic) ...
        cut = await pipeline.at_once.finish(BESIDE_GRACE_S)
        if cut:
            log.warning("work under way cut off at shutdown; finished after the restart "
                        "(first batches: by a worker still running)", count=cut)
        # ... then the twilio SDK's aiohttp session and the SMTP connections end.
        for channel in {*pipeline.channels.values(), *pipeline.bulk_channels.values()}:
            close = getattr(channel, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # shutting down: say so, but go on
                    log.warning("channel did not close cleanly", channel=channel.name,
                                error=repr(exc))

    _register_agents(app, by_name, pipeline, dead_letter)
    register_periodic_work(app, pipeline, timers, send)
    return app


def _register_agents(app: faust.App, by_name: dict[str, Any], pipeline: Pipeline,
                     dead_letter: DeadLetterSink) -> None:
    """One agent per topic, each with its handler from the pipeline."""
    for spec, handler in pipeline.handlers().items():
        # Deliveries are independent of each other (each claimed in Redis): several at once,
        # in any order. Every other topic keeps the order of its key (an incident's events,
        # an approval's decisions), with events of different keys handled at the same time.
        concurrency = {topics.DELIVERIES_SMS: DELIVERY_CONCURRENCY,
                       topics.DELIVERIES_EMAIL: DELIVERY_CONCURRENCY,
                       topics.DISPATCH_SMS: BATCH_CONCURRENCY,
                       topics.DISPATCH_EMAIL: BATCH_CONCURRENCY}.get(spec)
        if concurrency is None:
            _register_keyed_agent(app, by_name[spec.name], spec, handler, dead_letter,
                                  KEYED_IN_FLIGHT)
        else:
            _register_agent(app, by_name[spec.name], spec, handler, dead_letter, concurrency)


def _register_agent(app: faust.App, topic: Any, spec: topics.TopicSpec, handler: Handler,
                    dead_letter: DeadLetterSink, concurrency: int) -> None:
    """`concurrency` actors share the topic's events, in no order."""
    async def agent(stream: Any) -> AsyncIterator[None]:
        observe = _observer(spec)
        async for event in stream.events():
            await observe(event, handle_safely(spec, event.key, event.value, handler,
                                               dead_letter))
            yield None

    name = f"{spec.name.replace('-', '_')}_agent"
    agent.__name__ = agent.__qualname__ = name
    app.agent(topic, name=name, concurrency=concurrency)(agent)


def _register_keyed_agent(app: faust.App, topic: Any, spec: topics.TopicSpec,
                          handler: Handler, dead_letter: DeadLetterSink, in_flight: int
                          ) -> None:
    """Events of one key are handled one after the other, in the topic's order; events of
    different keys at the same time, up to `in_flight` at once. Each event is acked when its
    handler is done, and faust commits an offset only once every event before it is acked,
    so a crash loses nothing (what was being handled is handled again)."""
    async def agent(stream: Any) -> AsyncIterator[None]:
        observe = _observer(spec)
        manual = stream.noack()
        slots = asyncio.Semaphore(in_flight)
        last_of_key: dict[bytes | None, asyncio.Task[None]] = {}

        async def one(event: Any, before: asyncio.Task[None] | None) -> None:
            try:
                if before is not None:
                    await asyncio.wait([before])  # the same key's earlier event comes first
                await observe(event, handle_safely(spec, event.key, event.value, handler,
                                                   dead_letter))
                await manual.ack(event)
            finally:
                slots.release()
                if last_of_key.get(event.key) is asyncio.current_task():
                    del last_of_key[event.key]

        async for event in manual.events():
            await slots.acquire()
            task = asyncio.create_task(one(event, last_of_key.get(event.key)))
            last_of_key[event.key] = task
            yield None

    name = f"{spec.name.replace('-', '_')}_agent"
    agent.__name__ = agent.__qualname__ = name
    app.agent(topic, name=name, concurrency=1)(agent)


def _observer(spec: topics.TopicSpec) -> Callable[[Any, Awaitable[None]], Awaitable[None]]:
    """Runs an event's handling, observing how long the event waited since it was produced
    and how long its handler took (`loa_hop_wait_seconds`, `loa_handler_seconds`)."""
    hop_wait = obs.HOP_WAIT.labels(spec.name)
    handler_time = obs.HANDLER_TIME.labels(spec.name)

    async def observe(event: Any, handling: Awaitable[None]) -> None:
        started = time.time()
        # The record's timestamp is the producer's clock (CreateTime): this host's clock on
        # the embedded stack, only as good as NTP across hosts.
        hop_wait.observe(max(0.0, started - event.message.timestamp))
        await handling
        handler_time.observe(time.time() - started)

    return observe


def is_infrastructure(exc: BaseException) -> bool:
    """Redis or broker trouble: the event is fine, the world is not (yet). (A provider's
    trouble never reaches here: ``dispatch.deliveries`` makes it a delivery's outcome.)"""
    return isinstance(exc, RedisError | OSError | TimeoutError | BrokerUnavailable
                      | KafkaError)


async def handle_safely(spec: topics.TopicSpec, key: bytes | None, value: bytes,
                        handler: Handler, dead_letter: DeadLetterSink) -> None:
    """Run a handler. A bad event (undecodable, invalid, dangling, refused for good) goes to
    dead-letters; infrastructure trouble is retried for as long as it lasts, holding this
    partition (nothing is lost); an unexpected error is retried a few times, then
    dead-lettered so that one bug cannot stop the pipeline."""
    reason = ""
    attempt = 0
    settle = None  # what follows the dead letter (BadEvent.after_dead_letter)
    while True:
        attempt += 1
        try:
            await handler(value)
            return
        except (KeyError, BadEvent, PlaybookError, ConfigError,
                IncidentTransitionError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            settle = getattr(exc, "after_dead_letter", None)
            break
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if not is_infrastructure(exc) and attempt >= RETRIES:
                break
            log.warning("handler failed, retrying", topic=spec.name, attempt=attempt,
                        error=reason)
            await asyncio.sleep(min(0.2 * 2 ** min(attempt, 6), 5.0))
    letter = DeadLetter(topic=spec.name, key=key.decode(errors="replace") if key else None,
                        value=value.decode(errors="replace")[:10_000], reason=reason)
    obs.DEAD_LETTERS.labels(spec.name).inc()
    log.error("dead letter", topic=spec.name, reason=reason)
    while True:  # the dead letter itself must not be lost to a passing outage
        try:
            await dead_letter(letter)
            break
        except Exception as exc:
            log.warning("dead letter not recorded yet, retrying", error=repr(exc))
            await asyncio.sleep(2.0)
    if settle is not None:
        try:
            await settle()
        except Exception as exc:  # done again when the event comes again
            log.warning("what follows a dead letter not done", topic=spec.name,
                        error=repr(exc))
