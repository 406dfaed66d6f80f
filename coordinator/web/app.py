"""FastAPI app: `POST /api/reports`, read APIs, public statement pages, /healthz, /metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, StringConstraints, ValidationError
from redis.exceptions import RedisError

from coordinator import observability as obs
from coordinator import queries
from coordinator.broker import Producer, missing_topics
from coordinator.city import load_city
from coordinator.errors import BrokerUnavailable
from coordinator.events import Report, Severity, Slug
from coordinator.reports.filing import file_report, report_problems
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.web.decide import decide
from coordinator.web.hooks import hooks
from coordinator.web.state import State, web_state
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = Producer(settings)
        app.state.loa = State(settings, connect(settings.redis_url or ""), producer,
                              load_city(settings.config_dir))
        try:
            await producer.start()
        except BrokerUnavailable as exc:
            log.error("broker not reachable at start; reports will be refused", error=str(exc))
        yield
        await producer.stop()
        await app.state.loa.redis.aclose()

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan,
                  description="Crisis communication coordinator: reports in, statements out.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(api)
    app.include_router(pages)
    app.include_router(hooks)
    app.include_router(decide)
    app.include_router(subscriptions)
    app.state.templates = TEMPLATES
    tz = ZoneInfo(settings.timezone)
    TEMPLATES.env.filters["local"] = lambda iso: (
        datetime.fromisoformat(iso).astimezone(tz).strftime("%H:%M %d/%m/%Y") if iso else "")
    return app


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
    return await _published(web_state(request), statement_id)


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


async def _published(st: State, statement_id: str) -> dict[str, Any]:
    """A published statement; 404 for an unknown or unpublished (e.g. rejected) one."""
    found = await queries.statement_detail(st.redis, st.keys, statement_id)
    if found is None or not found.get("published_at"):
        raise HTTPException(404, f"no published statement {statement_id}")
    return found


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


@pages.get("/", response_class=HTMLResponse)
async def home(request: Request, lang: str = "vi") -> HTMLResponse:
    """The public page: published statements, newest first."""
    st = web_state(request)
    statements = await queries.published_statements(st.redis, st.keys)
    return TEMPLATES.TemplateResponse(request, "index.html", {
        "statements": statements, "lang": lang, "areas": st.city.areas})


@pages.get("/s/{statement_id}")
async def short_link(statement_id: str, request: Request) -> RedirectResponse:
    """The short link that SMS messages carry."""
    await _published(web_state(request), statement_id)
    return RedirectResponse(f"/statements/{statement_id}", status_code=307)


@pages.get("/statements/{statement_id}", response_class=HTMLResponse)
async def statement_page(statement_id: str, request: Request, lang: str = "vi") -> HTMLResponse:
    """One statement's own page: the stable link that messages carry."""
    st = web_state(request)
    found = await _published(st, statement_id)
    return TEMPLATES.TemplateResponse(request, "statement.html", {
        "s": found, "lang": lang, "areas": st.city.areas})


def new_report_id() -> str:
    """A fresh report id."""
    return f"rep-{uuid.uuid4().hex[:16]}"


def web_texts(statement: dict[str, Any], lang: str) -> dict[str, Any]:
    """The statement's web text in `lang`, else Vietnamese, else the first one."""
    web = [t for t in statement["texts"] if t["channel"] == "web"]
    for candidate in (lang, "vi"):
        for text in web:
            if text["language"] == candidate:
                return dict(text)
    return dict(web[0]) if web else {"title": statement["id"], "body": ""}


TEMPLATES.env.globals["web_texts"] = web_texts
