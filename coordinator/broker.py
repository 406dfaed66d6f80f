"""The Kafka side outside faust: topic creation and a producer for the web and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from coordinator import topics
from coordinator.errors import BrokerUnavailable, ConfigError
from coordinator.settings import Settings


def bootstrap_servers(kafka_url: str) -> str:
    """`host:port[,host:port]` from `kafka://host:port[;...]`."""
    return kafka_url.removeprefix("kafka://").replace(";", ",")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the brokers (None without TLS); LOA_KAFKA_CA_FILE turns TLS on.
    Raises ConfigError when the CA file cannot be read."""
    if not (settings.kafka_tls or settings.kafka_ca_file):
        return None
    try:
        return ssl.create_default_context(
            cafile=str(settings.kafka_ca_file) if settings.kafka_ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"LOA_KAFKA_CA_FILE {settings.kafka_ca_file}: {exc}") from exc


def kafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments (`security_protocol`, `sasl_*`, `ssl_context`) for the
    configured SASL and TLS; raises ConfigError for an incomplete SASL setup."""
    context = tls_context(settings)
    if settings.kafka_sasl_mechanism is None:
        return ({"security_protocol": "SSL", "ssl_context": context} if context
                else {"security_protocol": "PLAINTEXT"})
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        raise ConfigError(f"LOA_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism} needs "
                          "LOA_KAFKA_SASL_USERNAME and LOA_KAFKA_SASL_PASSWORD")
    return {"security_protocol": "SASL_SSL" if context else "SASL_PLAINTEXT",
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
            "ssl_context": context}


def faust_credentials(settings: Settings) -> Any:
    """faust's `broker_credentials` for the same SASL and TLS as :func:`kafka_security`
    (None for plaintext); raises ConfigError like it."""
    import faust  # the worker's alone: the web and the CLI never load faust

    security = kafka_security(settings)
    if "sasl_mechanism" in security:
        return faust.SASLCredentials(username=security["sasl_plain_username"],
                                     password=security["sasl_plain_password"],
                                     ssl_context=security["ssl_context"],
                                     mechanism=security["sasl_mechanism"])
    return faust.SSLCredentials(security["ssl_context"]) if "ssl_context" in security else None


async def missing_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """The topics Loa uses that the broker does not have; raises BrokerUnavailable."""
    return await _with_topics(settings, timeout_s, create=False)


async def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create every topic Loa uses that does not exist yet; returns the ones created.

    Raises BrokerUnavailable when the broker does not answer."""
    return await _with_topics(settings, timeout_s, create=True)


async def _with_topics(settings: Settings, timeout_s: float, create: bool) -> list[str]:
    assert settings.kafka_url
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.kafka_url),
                                request_timeout_ms=int(timeout_s * 1000),
                                **kafka_security(settings))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        wanted = {topics.topic_name(spec, settings.topic_prefix): spec for spec in topics.ALL}
        missing = [name for name in wanted if name not in existing]
        if missing and create:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics([
                    NewTopic(name, wanted[name].partitions(settings.topic_partitions), 1)
                    for name in missing])
        return missing
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"broker {settings.kafka_url} did not answer: {exc!r}") from exc
    finally:
        await admin.close()


class Producer:
    """Sends event bytes and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        assert settings.kafka_url
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._started = False
        self._starting = asyncio.Lock()

    @property
    def started(self) -> bool:
        """True once connected."""
        return self._started

    async def start(self) -> None:
        """Connect (inside the running event loop); raises BrokerUnavailable."""
        assert self.settings.kafka_url
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.settings.kafka_url), acks="all",
            request_timeout_ms=10_000, **kafka_security(self.settings),
        )
        try:
            await self._producer.start()
            self._started = True
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):  # what it opened before failing
                await self._producer.stop()
            raise BrokerUnavailable(f"broker {self.settings.kafka_url}: {exc!r}") from exc

    async def ensure_started(self) -> None:
        """Connect unless connected (one caller at a time); raises BrokerUnavailable."""
        async with self._starting:
            if not self._started:
                await self.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None and self._started:
            await self._producer.stop()
            self._started = False

    async def send(self, spec: topics.TopicSpec, key: str, value: bytes,
                   timeout_s: float = 10.0) -> None:
        """Send and wait until the broker has the message; raises BrokerUnavailable."""
        name = topics.topic_name(spec, self.settings.topic_prefix)
        if self._producer is None or not self._started:
            raise BrokerUnavailable(f"{name}: not connected to the broker")
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(name, value=value, key=key.encode()), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"{name}: not acknowledged: {exc!r}") from exc
