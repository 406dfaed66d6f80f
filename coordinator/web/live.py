"""Live updates for the public page: one watcher per web process notices newly published
statements in Redis and wakes every server-sent-events stream (`GET /events`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from coordinator import observability as obs
from coordinator import queries
from coordinator.keys import Keys
from coordinator.state import Redis

log = obs.get_logger("web.live")
HEARTBEAT_S = 15.0


class Live:
    """The newest published statement, and a condition its streams wait on."""

    def __init__(self, redis: Redis, keys: Keys, poll_s: float = 0.5) -> None:
        self.redis = redis
        self.keys = keys
        self.poll_s = poll_s
        self.seen: set[str] = set()
        self.latest: list[str] = []
        self.version = 0
        self.changed = asyncio.Condition()

    async def watch(self) -> None:
        """Poll the published set (cheap: the newest 20 ids) until cancelled."""
        first = True
        while True:
            try:
                ids = await queries.newest_published_ids(self.redis, self.keys, 20)
                new = [i for i in ids if i not in self.seen]
                self.seen = set(ids)  # what the newest 20 are now: bounded
                if new and not first:
                    async with self.changed:
                        self.latest = new
                        self.version += 1
                        self.changed.notify_all()
                first = False
            except RedisError as exc:
                log.warning("live watcher cannot read Redis", error=str(exc))
            await asyncio.sleep(self.poll_s)

    async def _newer_than(self, version: int) -> None:
        """Wait (holding the condition) until something newer than `version` came."""
        await self.changed.wait_for(lambda: self.version != version)

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events: `statement` with the new ids; a comment as heartbeat."""
        seen = self.version
        yield "retry: 2000\n\n"
        while True:
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._newer_than(seen), HEARTBEAT_S)
                fresh = self.version != seen
                seen, ids = self.version, list(self.latest)
            if fresh:
                yield f"event: statement\ndata: {json.dumps({'ids': ids})}\n\n"
            else:
                yield ": heartbeat\n\n"
