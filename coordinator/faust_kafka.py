"""faust's Kafka transport, with the consumer's fetch wait ours to set.

faust 0.15 builds the worker's aiokafka consumer with ``fetch_max_wait_ms=1500`` and no way
to change it. A broker may hold a fetch for up to that long before answering, and Tansu
does even when records are ready, so each hop between agents cost about 0.7 s. Here the wait
is ``Settings.broker_fetch_wait_ms`` (default 10 ms), on Tansu and a real Kafka alike.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the argument as given and hands it to its Fetcher on start();
        # faust passes a constant, so the value is replaced before the consumer starts.
        # tests/unit/test_faust_kafka.py holds this against the installed aiokafka.
        consumer._fetch_max_wait_ms = self.fetch_wait_ms
        return consumer


def transport_class(fetch_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """faust's aiokafka transport whose worker consumer waits at most `fetch_wait_ms` at the
    broker for records."""
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_wait_ms": fetch_wait_ms})

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return thread(self, loop=self.loop, beacon=self.beacon)

    return type("Transport", (faust_aiokafka.Transport,), {"Consumer": Consumer})


class App(faust.App):
    """A faust App whose consumer uses :func:`transport_class`."""

    def __init__(self, *args: Any, fetch_wait_ms: int, **kwargs: Any) -> None:
        self._fetch_wait_ms = fetch_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return transport_class(self._fetch_wait_ms)(self.conf.broker_consumer, self)
