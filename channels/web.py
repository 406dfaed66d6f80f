"""The web channel: publishing a statement makes it part of the public pages and API.

Its "provider" is Redis, which the web process reads: a published statement
is added to the public index, once.
"""

from __future__ import annotations

from typing import ClassVar

from redis.exceptions import RedisError

from channels.base import OutboundMessage, PermanentDeliveryError, Receipt, TransientDeliveryError
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import Redis


class WebChannel:
    """Publishes statements to the public web pages, feeds and API."""

    name: ClassVar[str] = "web"
    max_length: ClassVar[int | None] = None

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def send(self, message: OutboundMessage) -> Receipt:
        """Publish the message's statement; publishing it again changes nothing."""
        statement = message.statement
        if statement is None:
            raise PermanentDeliveryError("web: a web delivery needs a statement")
        key = self.keys.statement(statement.id)
        now = utcnow()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "statement", statement.model_dump_json())
                pipe.hsetnx(key, "published_at", now.isoformat())
                pipe.zadd(self.keys.statements_published(), {statement.id: now.timestamp()},
                          nx=True)
                await pipe.execute()
        except RedisError as exc:
            raise TransientDeliveryError(f"web: could not publish {statement.id}: {exc}") from exc
        return Receipt(message.id, provider_id=statement.id, status="delivered")

    async def close(self) -> None:
        """Nothing to release: Redis belongs to the runtime."""
