"""Bounded admission: under overload the web process refuses quickly instead of queuing.

At most `LOA_WEB_MAX_IN_FLIGHT` requests are handled at once; one more gets `503 Service
Unavailable` with `Retry-After: 1` at once, costing almost nothing, rather than waiting
behind the others until each takes half a minute. The live event streams (`/events`) and
the health checks are not counted: a stream mostly waits, and a load balancer must still
see the process alive.

Being the outermost of Loa's middlewares, it also times the report intake's answer
(`loa_report_accept_seconds`), so that /metrics tells the web's own part of a filer's wait.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator import observability as obs

UNCOUNTED = ("/events", "/healthz", "/metrics")
REPORTS = "/api/reports"  # POST: the report intake, timed


class Admission:
    """ASGI middleware: at most `limit` requests in flight."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNCOUNTED):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            obs.WEB_REFUSED.inc()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1"),
                (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body",
                        "body": "Quá tải, vui lòng thử lại. / Busy, try again.\n".encode()})
            return
        self.in_flight += 1
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if scope["path"] == REPORTS and scope["method"] == "POST":
                obs.REPORT_ACCEPT.observe(time.perf_counter() - started)
