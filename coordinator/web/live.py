"""Live updates for the public page: the news itself, pushed.

Publication, a changed promise and withdrawal write one entry to the `public:events`
stream, in the same transaction as the change (statements.public_events). One watcher per
web process reads that stream with a blocking XREAD (Redis pushes the entry the moment it
is written), reads the statement once, renders its card in every language once, and wakes
every server-sent events stream (`GET /events`) with those bytes. No open page comes back
for the list: the event carries what it shows, and the page puts it in place itself.

Each event's `id:` is the stream entry's id, the same in every web process, so a page that
reconnects (to this process or another) sends `Last-Event-ID`, and a page that just loaded
sends `?after=` the change its list was drawn at; either gets what it missed from the
recent events kept in memory or, when it missed more than those, an event telling it to
reload its list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError

from coordinator import observability as obs
from coordinator import queries
from coordinator.city import City
from coordinator.keys import Keys
from coordinator.state import Redis

log = obs.get_logger("web.live")
HEARTBEAT_S = 15.0
BLOCK_MS = 2_000  # one XREAD waits this long for news (under redis_client.COMMAND_TIMEOUT_S)
KEPT = 256  # recent events kept for pages that reconnect

Render = Callable[[dict[str, object], str], str]


def stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id as a comparable pair; (-1, -1) for anything else. Pure."""
    millis, _, seq = text.partition("-")
    try:
        return int(millis), int(seq or 0)
    except ValueError:
        return -1, -1


def reload_event(change_id: str) -> str:
    """The event that makes a live page fetch its list again. Pure."""
    return f"id: {change_id}\nevent: reload\ndata: {{}}\n\n"


@dataclass(frozen=True)
class Change:
    """One change to the public pages, as server-sent-event text."""

    id: str
    text: str


class Live:
    """The public pages' latest change (their cache's version), the recent changes, and a
    condition the event streams wait on."""

    def __init__(self, redis: Redis, keys: Keys, city: City, render: Render,
                 languages: Sequence[str]) -> None:
        self.redis, self.keys, self.city = redis, keys, city
        self.render, self.languages = render, languages
        self.version = "0-0"
        self.changed_at = datetime.now(UTC)
        self.recent: deque[Change] = deque(maxlen=KEPT)
        self.horizon = "0-0"  # every change after this one is in `recent`
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        """Begin after the newest change already made (the pages render what is there); with
        Redis not answering, from the start of the stream (the watcher retries)."""
        try:
            self.version = self.horizon = await queries.newest_public_change(self.redis,
                                                                             self.keys)
        except RedisError as exc:
            log.warning("live watcher cannot read Redis at start", error=str(exc))

    async def watch(self) -> None:
        """Read the public changes as Redis pushes them, until cancelled."""
        while True:
            try:
                found = await queries.public_changes(self.redis, self.keys, self.version,
                                                     BLOCK_MS)
                for change_id, fields in found:
                    await self._take(change_id, fields)
            except RedisError as exc:
                log.warning("live watcher cannot read Redis", error=str(exc))
                await asyncio.sleep(1.0)

    async def _take(self, change_id: str, fields: dict[str, str]) -> None:
        """One change: its event for every stream. A change that cannot be read or drawn
        (a broken record) still moves the version on, as `reload`, and is logged: the
        watcher never stops on one entry."""
        try:
            statement = (await queries.statement_detail(self.redis, self.keys,
                                                        fields["statement"])
                         if fields.get("change") == "published" else None)
            if statement is not None and statement.get("exercise"):
                statement, text = None, ""  # a drill's: kept off the public pages
            else:
                text = self.event_text(change_id, fields, statement)
        except RedisError:
            raise
        except Exception as exc:  # one bad entry must not end live updates
            log.error("a public change could not be drawn; pages reload", change=change_id,
                      error=repr(exc))
            text = reload_event(change_id)
        async with self.changed:
            if len(self.recent) == self.recent.maxlen:
                self.horizon = self.recent[0].id  # forgotten from here on
            if text:
                self.recent.append(Change(change_id, text))
            self.version = change_id
            self.changed_at = datetime.now(UTC)
            self.changed.notify_all()

    def event_text(self, change_id: str, fields: dict[str, str],
                   statement: dict[str, object] | None) -> str:
        """The server-sent event for a change: `statement` with the card in every language
        and the areas it concerns, or `reload` (a withdrawal: the list is fetched again)."""
        if statement is None or not statement.get("published_at") or statement.get(
                "withdrawn_at"):
            gone = json.dumps({"statement": fields.get("statement", "")})
            return f"id: {change_id}\nevent: reload\ndata: {gone}\n\n"
        area = str(statement["area"])
        data = {"id": statement["id"], "incident": statement["incident_id"], "area": area,
                "path": self.city.overlapping(area),
                "cards": {lang: self.render(statement, lang) for lang in self.languages}}
        return (f"id: {change_id}\nevent: statement\n"
                f"data: {json.dumps(data, ensure_ascii=False)}\n\n")

    def missed(self, last_id: str, upto: str) -> list[str] | None:
        """The events after `last_id` up to `upto`, oldest first; None when some of them
        are not kept here (the page must reload its list)."""
        after, until = stream_id(last_id), stream_id(upto)
        if after >= until:
            return []
        if after < stream_id(self.horizon):
            return None
        return [c.text for c in self.recent if after < stream_id(c.id) <= until]

    async def _newer_than(self, version: str) -> None:
        """Wait (holding the condition) until a change newer than `version` came."""
        await self.changed.wait_for(lambda: self.version != version)

    async def stream(self, last_event_id: str | None = None) -> AsyncIterator[str]:
        """Server-sent events from now (or from `last_event_id`); a comment as heartbeat."""
        seen = self.version
        yield "retry: 2000\n\n"
        if last_event_id:
            caught_up = self.missed(last_event_id, seen)
            if caught_up is None:
                yield reload_event(seen)
            else:
                for text in caught_up:
                    yield text
        while True:
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._newer_than(seen), HEARTBEAT_S)
                if stream_id(seen) < stream_id(self.horizon):  # too slow: some forgotten
                    fresh = [reload_event(self.version)]
                else:
                    fresh = [c.text for c in self.recent
                             if stream_id(c.id) > stream_id(seen)]
                seen = self.version
            if fresh:
                yield "".join(fresh)
            else:
                yield ": heartbeat\n\n"
