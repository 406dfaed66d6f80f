"""The web channel: publishing a statement makes it part of the public pages and API.

Its "provider" is Redis, which the web process reads: a published statement
is added to the public index, once.
"""

from __future__ import annotations

from typing import ClassVar

from redis.exceptions import RedisError

from channels.base import Receipt, TransientDeliveryError
from coordinator.events import Delivery, Statement
from coordinator.keys import Keys
from coordinator.state import Redis


class WebChannel:
    """Publishes statements to the public web pages, feeds and API."""

    name: ClassVar[str] = "web"
    max_length: ClassVar[int | None] = None

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def send(self, statement: Statement, delivery: Delivery) -> Receipt:
        """Publish; publishing the same statement again changes nothing."""
        key = self.keys.statement(statement.id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "statement", statement.model_dump_json())
                pipe.hsetnx(key, "published_at", delivery.at.isoformat())
                pipe.zadd(self.keys.statements_published(), {statement.id: delivery.at.timestamp()},
                          nx=True)
                await pipe.execute()
        except RedisError as exc:
            raise TransientDeliveryError(f"web: could not publish {statement.id}: {exc}") from exc
        return Receipt(delivery.id, provider_id=statement.id, status="delivered")
