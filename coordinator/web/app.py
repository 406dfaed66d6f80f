"""The web app, composed: every router behind the lock of its action (coordinator.access),
one body-size limit, sessions, error pages; plus /healthz and /metrics."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator import observability as obs
from coordinator.access import Action, Principal, decide
from coordinator.broker import Producer, missing_topics
from coordinator.city import load_city
from coordinator.errors import BrokerUnavailable
from coordinator.feeds import web_text
from coordinator.playbooks.loader import load_playbooks
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.web.api import api
from coordinator.web.api_docs import api_docs
from coordinator.web.auth import allow
from coordinator.web.body_limit import BodyLimit
from coordinator.web.console import console
from coordinator.web.decide import decide as decide_router
from coordinator.web.feeds import feeds
from coordinator.web.hooks import hooks, keep_recovering
from coordinator.web.inbox import inbox
from coordinator.web.live import Live
from coordinator.web.login import login
from coordinator.web.pages import page
from coordinator.web.public import public
from coordinator.web.security import SESSION_COOKIE, SESSION_MAX_AGE_S, LoginRequired
from coordinator.web.sessions import (
    RotatingSessionMiddleware,
    previous_session_keys,
    rotation_ends,
)
from coordinator.web.short_links import short_links
from coordinator.web.state import State, web_state
from coordinator.web.subscribe import subscribe
from coordinator.web.subscriptions import subscriptions
from coordinator.web.tips import tips

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
log = obs.get_logger("web")


def create_web_app(settings: Settings) -> FastAPI:
    """The web app for these settings."""
    if not settings.redis_url or not settings.kafka_url:
        raise ValueError("the web app needs LOA_KAFKA_URL and LOA_REDIS_URL (or `loa up`)")

    city = load_city(settings.config_dir)
    playbooks = load_playbooks(settings.playbooks_dir, city)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = Producer(settings)
        app.state.loa = State(settings, connect(settings.redis_url or ""), producer, city,
                              playbooks)
        app.state.live = Live(app.state.loa.redis, app.state.loa.keys)
        watcher = asyncio.create_task(app.state.live.watch())
        # inbound SMS left pending (here or by a process that died) are finished from Redis
        recovery = asyncio.create_task(keep_recovering(app.state.loa))
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.error("broker not reachable at start; reports will be refused", error=str(exc))
        yield
        watcher.cancel()
        recovery.cancel()
        await producer.stop()
        await app.state.loa.redis.aclose()

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan,
                  description="Crisis communication coordinator: reports in, statements out. "
                              "Send an API token (`loa tokens add`) as a bearer token.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(RotatingSessionMiddleware, secret_key=session_key(settings),
                       previous_keys=previous_session_keys(settings),
                       previous_until=rotation_ends(settings),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE_S,
                       same_site="lax", https_only=settings.web_url().startswith("https:"))
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")),
              name="static")
    # Every router's routes each depend on `allow(action)` (coordinator.web.auth).
    for router in (api, pages, console, inbox, public, feeds, login, hooks, decide_router,
                   subscriptions, subscribe, tips, short_links):
        app.include_router(router)
    app.include_router(api_docs(Action.public_read if settings.public_api_docs
                                else Action.ops_read))
    app.state.templates = TEMPLATES
    tz = ZoneInfo(settings.timezone)
    TEMPLATES.env.filters["local"] = lambda iso: (
        datetime.fromisoformat(iso).astimezone(tz).strftime("%H:%M %d/%m/%Y") if iso else "")
    return app


def session_key(settings: Settings) -> str:
    """What signs session cookies: LOA_SESSION_SECRET, else the link secret, else a random
    key (sessions then end when the web process restarts; the log says so)."""
    for secret in (settings.session_secret, settings.link_secret):
        if secret is not None:
            return "session:" + secret.get_secret_value()
    log.warning("no LOA_SESSION_SECRET: sessions end when this process restarts")
    return secrets.token_urlsafe(32)


async def _to_login(request: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?{urlencode({'next': exc.next_path})}", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    """JSON for the API and for clients that do not want HTML; a page for browsers."""
    assert isinstance(exc, StarletteHTTPException)
    wants_html = "text/html" in request.headers.get("accept", "")
    if request.url.path.startswith("/api") or not wants_html:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    shown = page(request, "decided.html", exc.status_code, message=str(exc.detail))
    shown.headers.update(exc.headers or {})
    return shown


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
              for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=422, content=jsonable_encoder(
        {"detail": f"invalid request: {summary}", "errors": errors}))


pages = APIRouter(include_in_schema=False)


@pages.get("/healthz")
async def healthz(request: Request,
                  principal: Annotated[Principal, Depends(allow(Action.public_read))]
                  ) -> JSONResponse:
    """200 when Redis and the broker answer, 503 when not; what fails is named only to
    monitors and admins (it says how the deployment is built)."""
    st = web_state(request)
    checks: dict[str, str] = {}
    try:
        await st.redis.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {exc}"
    checks["broker"] = await _broker_check(st)
    healthy = all(v == "ok" for v in checks.values())
    shown: dict[str, Any] = {"status": "ok" if healthy else "degraded"}
    if decide(principal, Action.ops_read).allowed:
        shown["checks"] = checks
    return JSONResponse(shown, status_code=200 if healthy else 503)


@pages.get("/metrics")
async def metrics(_: Annotated[Principal, Depends(allow(Action.ops_read))]) -> Response:
    """Prometheus metrics of the web process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _broker_check(st: State) -> str:
    try:
        missing = await missing_topics(st.settings, timeout_s=3.0)
    except BrokerUnavailable as exc:
        return f"unreachable: {exc}"
    if missing:
        return f"missing topics: {', '.join(missing)} (start a worker, or `loa doctor`)"
    if not st.producer.started:
        try:
            await st.producer.start()
        except BrokerUnavailable as exc:
            return f"producer cannot connect: {exc}"
    return "ok"


TEMPLATES.env.globals["web_texts"] = web_text  # the statement's web text in a language
