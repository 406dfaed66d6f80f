"""FastAPI app: `POST /api/reports`, read APIs, public statement pages, /healthz, /metrics."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, StringConstraints, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from coordinator import observability as obs
from coordinator import queries
from coordinator.broker import Producer, missing_topics
from coordinator.city import load_city
from coordinator.errors import BrokerUnavailable
from coordinator.events import Report, Severity, Slug
from coordinator.feeds import web_text
from coordinator.playbooks.loader import load_playbooks
from coordinator.reports.filing import file_report, report_problems
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.web.console import console
from coordinator.web.decide import decide
from coordinator.web.feeds import feeds
from coordinator.web.hooks import hooks
from coordinator.web.inbox import inbox
from coordinator.web.live import Live
from coordinator.web.login import login
from coordinator.web.pages import page
from coordinator.web.public import public, published
from coordinator.web.security import SESSION_COOKIE, SESSION_MAX_AGE_S, LoginRequired
from coordinator.web.state import State, web_state
from coordinator.web.subscribe import subscribe
from coordinator.web.subscriptions import subscriptions

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
log = obs.get_logger("web")


class ReportIn(BaseModel):
    """A report as the API takes it; `id` makes a retry safe (the same id is taken in once)."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,80}$")] | None = None
    kind: Slug
    severity: Severity
    area: Slug
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
    details: Annotated[str, StringConstraints(max_length=5000)] = ""
    reporter: Annotated[str, StringConstraints(max_length=200)] = ""


class Accepted(BaseModel):
    """The answer to an accepted report."""

    id: str
    status: str = "accepted"


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
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.error("broker not reachable at start; reports will be refused", error=str(exc))
        yield
        watcher.cancel()
        await producer.stop()
        await app.state.loa.redis.aclose()

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan,
                  description="Crisis communication coordinator: reports in, statements out.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(SessionMiddleware, secret_key=session_key(settings),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE_S,
                       same_site="lax", https_only=settings.web_url().startswith("https:"))
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")),
              name="static")
    app.include_router(api)
    app.include_router(pages)
    app.include_router(public)
    app.include_router(login)
    app.include_router(console)
    app.include_router(inbox)
    app.include_router(hooks)
    app.include_router(decide)
    app.include_router(feeds)
    app.include_router(subscriptions)
    app.include_router(subscribe)
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


api = APIRouter(prefix="/api")
pages = APIRouter(include_in_schema=False)


@api.post("/reports", status_code=202, response_model=Accepted,
          responses={422: {"description": "a field is invalid; the message names it"},
                     503: {"description": "not recorded: try again with the same id"}})
async def post_report(body: ReportIn, request: Request) -> Accepted:
    """Accept a report once it is durably recorded (outbox in Redis, and on the broker)."""
    st = web_state(request)
    try:
        report = Report(**body.model_dump(exclude={"id"}), id=body.id or new_report_id(),
                        received_via="api")
    except ValidationError as exc:  # pragma: no cover - ReportIn has the same rules
        raise RequestValidationError(exc.errors()) from exc
    problems = report_problems(report, st.city)
    if problems:
        raise RequestValidationError([
            {"loc": ("body", field), "msg": why, "type": "value_error"}
            for field, why in problems])
    try:
        await file_report(st.redis, st.keys, st.producer, report)
    except (BrokerUnavailable, RedisError) as exc:
        log.error("report not recorded", report=report.id, error=str(exc))
        raise HTTPException(503, f"report {report.id} not recorded yet: {exc}; "
                            "send it again with the same id") from exc
    obs.REPORTS_ACCEPTED.labels("api").inc()
    log.info("report accepted", report=report.id, kind=report.kind, area=report.area)
    return Accepted(id=report.id)


@api.get("/incidents")
async def get_incidents(request: Request) -> list[dict[str, str]]:
    """Incidents, newest first."""
    st = web_state(request)
    return await queries.list_incidents(st.redis, st.keys)


@api.get("/incidents/{incident_id}")
async def get_incident(incident_id: str, request: Request) -> dict[str, Any]:
    """One incident with its timeline."""
    st = web_state(request)
    found = await queries.incident_detail(st.redis, st.keys, incident_id)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found


@api.get("/approvals")
async def get_approvals(request: Request, all: bool = False) -> list[dict[str, Any]]:
    """Pending approval requests by deadline (`?all=true`: every request)."""
    st = web_state(request)
    return await queries.list_approvals(st.redis, st.keys, pending_only=not all)


@api.get("/statements")
async def get_statements(request: Request) -> list[dict[str, Any]]:
    """Published statements, newest first."""
    st = web_state(request)
    return await queries.published_statements(st.redis, st.keys)


@api.get("/statements/{statement_id}")
async def get_statement(statement_id: str, request: Request) -> dict[str, Any]:
    """One published statement."""
    return await published(web_state(request), statement_id)


@pages.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """200 when Redis and the broker answer; 503 naming what does not."""
    st = web_state(request)
    checks: dict[str, str] = {}
    try:
        await st.redis.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {exc}"
    checks["broker"] = await _broker_check(st)
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if healthy else "degraded", "checks": checks},
                        status_code=200 if healthy else 503)


@pages.get("/metrics")
async def metrics() -> Response:
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


def new_report_id() -> str:
    """A fresh report id."""
    return f"rep-{uuid.uuid4().hex[:16]}"


TEMPLATES.env.globals["web_texts"] = web_text  # the statement's web text in a language
