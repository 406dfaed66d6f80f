"""Public reads served from memory, with HTTP caching a proxy or CDN can carry.

A public page or feed is rendered once per (path and query, public version) and kept for
`LOA_PUBLIC_CACHE_S` (5 s): the version is the newest change to the public pages
(web.live), so a publication or withdrawal is seen by the next request, and what changes
with time alone (a promise moved, an alert expiring) is at most that old. Requests for the
same page while it renders wait for that one rendering instead of each reading Redis.

Every answer it keeps carries an `ETag` and `Last-Modified`, and `Cache-Control: public,
max-age, stale-while-revalidate`; `If-None-Match` gets `304 Not Modified`. A signed-in staff
member's pages are never kept (they show the account) and say `private, no-store`; errors
are not kept. The key is the path and the route's own query parameters, sorted: unknown
parameters cannot make new entries.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any, ParamSpec

from fastapi import Request
from fastapi.responses import Response

P = ParamSpec("P")
MAX_ENTRIES = 2048
STALE_WHILE_REVALIDATE_S = 10


@dataclass(frozen=True)
class Entry:
    """One rendered answer."""

    version: str
    made: float
    body: bytes
    media_type: str
    etag: str


class PublicCache:
    """Rendered public answers by key, newest version only, least recently used evicted."""

    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.rendering: dict[tuple[str, str], asyncio.Future[Entry | None]] = {}

    def fresh(self, key: str, version: str, now: float) -> Entry | None:
        """The kept answer if it is of `version` and younger than the TTL."""
        entry = self.entries.get(key)
        if entry is None or entry.version != version or now - entry.made >= self.ttl_s:
            return None
        self.entries.move_to_end(key)
        return entry

    def keep(self, key: str, entry: Entry) -> None:
        """Keep an answer (evicting the least recently used beyond the bound)."""
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    async def get(self, key: str, version: str, render: Callable[[], Awaitable[Response]]
                  ) -> Entry | Response:
        """The kept answer, or a new one rendered once for everyone asking meanwhile; an
        answer that is not a 200 is returned as it is and not kept."""
        entry = self.fresh(key, version, time.monotonic())
        if entry is not None:
            return entry
        pending = self.rendering.get((key, version))
        if pending is not None:
            shared = await asyncio.shield(pending)
            if shared is not None:
                return shared
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self.rendering[(key, version)] = future
        try:
            answer = await render()
            if answer.status_code != 200:
                future.set_result(None)
                return answer
            body = bytes(answer.body)
            entry = Entry(version, time.monotonic(), body, answer.media_type or "text/html",
                          '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
            self.keep(key, entry)
            future.set_result(entry)
            return entry
        except BaseException:
            if not future.done():
                future.set_result(None)
            raise
        finally:
            self.rendering.pop((key, version), None)


def answer_from(entry: Entry, request: Request, ttl_s: float, modified: str) -> Response:
    """The HTTP answer for a kept entry: 304 when the client has it already."""
    headers = {"ETag": entry.etag, "Last-Modified": modified,
               "Cache-Control": f"public, max-age={int(ttl_s)}, "
                                f"stale-while-revalidate={STALE_WHILE_REVALIDATE_S}",
               "Vary": "Cookie"}
    asked = request.headers.get("if-none-match", "")
    if entry.etag in {tag.strip().removeprefix("W/") for tag in asked.split(",")}:
        return Response(status_code=304, headers=headers)
    media = entry.media_type
    if media.startswith("text/") and "charset" not in media:
        media += "; charset=utf-8"
    return Response(entry.body, headers=headers, media_type=media)


def cached(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Serve a public GET route from the public cache (the route takes `request`)."""
    own = sorted(set(inspect.signature(handler).parameters) - {"request"})

    @functools.wraps(handler)
    async def serve(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs["request"]
        assert isinstance(request, Request)
        # Staff see their account: never shared (the route's lock has identified them).
        if getattr(request.state, "account", None) is not None:
            answer = await handler(*args, **kwargs)
            answer.headers["Cache-Control"] = "private, no-store"
            return answer
        app: Any = request.app
        live, cache = app.state.live, app.state.public_cache
        params = dict(request.query_params)
        if "lang" in params and "lang" in own:  # one entry per declared language, and one
            # for every other `?lang=` (a page in the city's language, a feed's 422)
            params["lang"] = app.state.loa.city.languages.find(params["lang"]) or "?"
        key = request.url.path + "?" + "&".join(
            f"{name}={params[name]}" for name in own if name in params)
        found = await cache.get(key, live.version, lambda: handler(*args, **kwargs))
        if isinstance(found, Response):
            return found
        return answer_from(found, request, cache.ttl_s,
                           format_datetime(live.changed_at, usegmt=True))

    return serve
