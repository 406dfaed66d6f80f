"""The web app, composed: every router behind the lock of its action (coordinator.access),
one body-size limit, sessions, error pages, templates; the process's one runtime
(coordinator.runtime) and its broker producer, held for the app's lifetime."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator import observability as obs
from coordinator.access import Action
from coordinator.accounts import prepare_logins
from coordinator.broker import Producer
from coordinator.city import City
from coordinator.dispatch.status_callbacks import StatusCallbacks
from coordinator.errors import BrokerUnavailable, ConfigError
from coordinator.feeds import web_text
from coordinator.reports.filing import Handoffs
from coordinator.runtime import build_runtime
from coordinator.settings import Settings
from coordinator.web.admission import Admission
from coordinator.web.api import api, report_route
from coordinator.web.api_docs import api_docs
from coordinator.web.body_limit import BodyLimit
from coordinator.web.console import console
from coordinator.web.decide import decide
from coordinator.web.error_pages import http_error, to_login, validation_error
from coordinator.web.feeds import feeds
from coordinator.web.health import health
from coordinator.web.hooks import hooks, keep_recovering, status_route
from coordinator.web.inbox import inbox
from coordinator.web.live import Live, Render
from coordinator.web.login import login
from coordinator.web.public import public
from coordinator.web.public_cache import PublicCache
from coordinator.web.records import records
from coordinator.web.security import SESSION_COOKIE, SESSION_MAX_AGE_S, LoginRequired
from coordinator.web.sessions import (
    RotatingSessionMiddleware,
    previous_session_keys,
    rotation_ends,
)
from coordinator.web.short_links import short_links
from coordinator.web.state import State
from coordinator.web.subscribe import subscribe
from coordinator.web.subscriptions import subscriptions
from coordinator.web.tips import tips
from coordinator.web.translate import translate

HERE = Path(__file__).parent
log = obs.get_logger("web")
HANDOFF_GRACE_S = 5.0
"""How long a stopping web waits for accepted reports still on their way to the broker."""


def create_web_app(settings: Settings) -> FastAPI:
    """The web app for these settings (config/ and playbooks/ are loaded now: a broken one
    fails here, before serving)."""
    if not settings.redis_url or not settings.kafka_url:
        raise ConfigError("the web app needs LOA_KAFKA_URL and LOA_REDIS_URL (or `loa up`)")
    rt = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = Producer(settings)
        app.state.loa = State(rt, producer, StatusCallbacks(rt.redis, rt.keys),
                              Handoffs(producer))
        app.state.live = Live(rt.redis, rt.keys, rt.city, card_renderer(app, rt.city),
                              rt.city.languages.tags)
        await app.state.live.start()
        await prepare_logins()
        app.state.public_cache = PublicCache(settings.public_cache_s)
        watcher = asyncio.create_task(app.state.live.watch())
        # inbound SMS left pending (here or by a process that died) are finished from Redis
        recovery = asyncio.create_task(keep_recovering(app.state.loa))
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.error("broker not reachable at start; reports are kept, and go on to it once "
                      "it answers", error=str(exc))
        yield
        # The background tasks end before what they use is closed: one still running would
        # log a connection error at every shutdown.
        for task in (watcher, recovery):
            task.cancel()
        await asyncio.gather(watcher, recovery, return_exceptions=True)
        await app.state.loa.handoffs.finish(HANDOFF_GRACE_S)
        await producer.stop()
        await rt.redis.aclose()

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan,
                  description="Crisis communication coordinator: reports in, statements out. "
                              "Send an API token (`loa tokens add`) as a bearer token.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(LoginRequired, to_login)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(RotatingSessionMiddleware, secret_key=session_key(settings),
                       previous_keys=previous_session_keys(settings),
                       previous_until=rotation_ends(settings),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE_S,
                       same_site="lax", https_only=settings.web_url().startswith("https:"))
    # Added last, so outermost: a request past the bound is refused before anything else.
    app.add_middleware(Admission, limit=settings.web_max_in_flight)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # Every router's routes each depend on `allow(action)` (coordinator.web.auth). Routes
    # are matched in this order, one by one: the busiest first (a provider's status
    # callbacks, two an SMS during a fan-out, and reports, each as a plain `locked_route`:
    # the `api` router's POST /api/reports is the schema's declaration of the second),
    # whose prefixes no other router uses; the three under /console keep their order.
    app.router.routes.append(status_route)
    app.router.routes.append(report_route)
    for router in (hooks, api, health, translate, console, records, inbox, public, feeds,
                   login, decide, subscriptions, subscribe, tips, short_links):
        app.include_router(router)
    app.include_router(api_docs(Action.public_read if settings.public_api_docs
                                else Action.ops_read))
    app.state.templates = web_templates(settings, rt.city)
    return app


def web_templates(settings: Settings, city: City) -> Jinja2Templates:
    """The pages' templates, with the `local` time filter (LOA_TIMEZONE), `web_texts` (a
    statement's web text in a language), and the public words: `_` (a page's own, set by
    ``pages.page``; this global is the city's language) and `gettext_in(lang)` (for a macro
    rendered outside a page); one set per app."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["_"] = city.catalogs.of(city.languages.default).gettext
    templates.env.globals["gettext_in"] = lambda lang: city.catalogs.of(lang).gettext
    templates.env.globals["text_direction"] = city.languages.direction
    tz = ZoneInfo(settings.timezone)
    templates.env.filters["local"] = lambda iso: (
        datetime.fromisoformat(iso).astimezone(tz).strftime("%H:%M %d/%m/%Y") if iso else "")
    templates.env.globals["web_texts"] = lambda s, lang: web_text(s, city.languages.order(lang))
    return templates


def card_renderer(app: FastAPI, city: City) -> Render:
    """A statement's card on the public list, as HTML, in a language (web.live sends it)."""
    card = app.state.templates.env.get_template("statement_card.html").module.card

    def render(statement: dict[str, object], lang: str) -> str:
        return str(card(statement, lang, city.areas))

    return render


def session_key(settings: Settings) -> str:
    """What signs session cookies: LOA_SESSION_SECRET, else the link secret, else a random
    key (sessions then end when the web process restarts; the log says so)."""
    for secret in (settings.session_secret, settings.link_secret):
        if secret is not None:
            return "session:" + secret.get_secret_value()
    log.warning("no LOA_SESSION_SECRET: sessions end when this process restarts")
    return secrets.token_urlsafe(32)
