"""The JSON API: reports in (authenticated), tips in (anyone, unverified), and reads for
staff and for the press and partners. Every route names its action for the policy in
`coordinator.access`; lists are paginated (`cursor`, `limit` up to 200)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from redis.exceptions import RedisError

from coordinator import observability as obs
from coordinator import queries
from coordinator.access import Action, Principal, decide
from coordinator.events import Claim, Report, Severity, Slug, Spreading
from coordinator.incidents.surge import recent_surges
from coordinator.reports.filing import ReportIdTaken, record_report, report_problems
from coordinator.reports.sources import namespaced_report_id, source_of
from coordinator.reports.tips import Tip, TipIn, new_tip_id, recent_tips, take_tip
from coordinator.web.auth import allow, locked_route, refuse
from coordinator.web.ids import IncidentId, StatementId
from coordinator.web.public import published
from coordinator.web.security import client_of, rate_limit
from coordinator.web.state import web_state
from coordinator.web.tips import TIP_LIMIT

log = obs.get_logger("web")
api = APIRouter(prefix="/api")

Cursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$",
                                     description="from the previous page's `next_cursor`")]
Limit = Annotated[int, Query(ge=1, le=queries.MAX_PAGE)]


class ReportIn(BaseModel):
    """A report as the API takes it; `id` (yours) makes a retry safe: the same id from the
    same credential is taken in once."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{6,80}$")] | None = None
    kind: Slug
    severity: Severity
    area: Slug
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
    details: Annotated[str, StringConstraints(max_length=5000)] = ""
    reporter: Annotated[str, StringConstraints(max_length=200)] = ""
    exercise: bool = Field(default=False, description="a drill: its messages are marked as "
                           "such and go only to subscribers who opted into drills")
    drill_list: Slug | None = Field(default=None, description="an exercise's test list: "
                                    "its only audience (subscribers added with --list)")
    claim: Claim = Field(default="", description="false information (kinds with claims, "
                         "e.g. misinformation): the claim, in the words that are spreading")
    spreading: Spreading = Field(default_factory=list, description="where the claim is "
                                 "spreading: links, or a screenshot described in words")


class Accepted(BaseModel):
    """The answer to an accepted report or tip."""

    id: str
    status: str = "accepted"


class Page(BaseModel):
    """One page of a list; ask again with `cursor=next_cursor` while it is not null."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _window(cursor: str | None, limit: int) -> tuple[int, int]:
    start, _ = queries.window(cursor, limit)
    return start, limit


def _page(items: list[dict[str, Any]], start: int, limit: int) -> Page:
    return Page(items=items, next_cursor=queries.next_cursor(start, limit, len(items)))


@api.post("/reports", status_code=202, response_model=Accepted,
          responses={401: {"description": "no credential"},
                     403: {"description": "the credential may not report (here)"},
                     409: {"description": "your `id` was used for a different report"},
                     422: {"description": "a field is invalid; the message names it"},
                     503: {"description": "not recorded (Redis did not answer): try again "
                                          "with the same id"}})
async def post_report(body: ReportIn, request: Request,
                      principal: Annotated[Principal, Depends(allow(Action.report_file))]
                      ) -> Accepted:
    """Accept a report once it is durably recorded (the outbox in Redis); its trip to the
    broker goes on behind the answer, and the worker resends it from the outbox if the
    broker does not take it."""
    # The schema's declaration: the app serves this path with `report_route`, first.
    return await accept_report(request, principal, body)


async def accept_report(request: Request, principal: Principal, body: ReportIn) -> Accepted:
    """A report from `principal`, recorded: 422 for a field the city does not know, 403
    outside their scope, 503 when Redis did not take it."""
    st = web_state(request)
    try:
        report = Report(**body.model_dump(exclude={"id"}), id=namespaced_report_id(
            principal, body.id), received_via="api", source=source_of(principal))
    except ValidationError as exc:  # pragma: no cover - ReportIn has the same rules
        raise RequestValidationError(exc.errors()) from exc
    problems = report_problems(report, st.city)
    if problems:
        raise RequestValidationError([
            {"loc": ("body", field), "msg": why, "type": "value_error"}
            for field, why in problems])
    scoped = decide(principal, Action.report_file, report.area,
                    {report.area: st.city.ancestors(report.area)})
    if not scoped.allowed:
        raise refuse(request, scoped)
    try:
        await record_report(st.redis, st.keys, report)
    except ReportIdTaken as exc:
        raise HTTPException(409, f"id: {exc}") from exc
    except RedisError as exc:
        log.error("report not recorded", report=report.id, error=str(exc))
        raise HTTPException(503, f"report {report.id} not recorded yet: {exc}; "
                            "send it again with the same id") from exc
    st.handoffs.start(report)  # recorded: the broker's ack is not the filer's to wait for
    obs.REPORTS_ACCEPTED.labels("api").inc()
    log.info("report accepted", report=report.id, kind=report.kind, area=report.area,
             actor=principal.actor)
    return Accepted(id=report.id)


async def post_report_plainly(request: Request) -> Response:
    """`POST /api/reports` as the app serves it: :func:`post_report`'s work, behind the
    same lock, without FastAPI's dependency solving, body handling and answer checking
    (about a sixth of the request's instructions, `bench/web_post.py`): the busiest write
    of the API. Only a body that says it is JSON is read, as FastAPI reads it (strictly: a
    body with no Content-Type is no JSON, so a browser's form or `fetch` from another page
    cannot file one with the staff's session without a CORS preflight)."""
    return JSONResponse((await accept_report(request, request.state.principal,
                                             await report_in(request))).model_dump(),
                        status_code=202)


async def report_in(request: Request) -> ReportIn:
    """The request's body as a report; RequestValidationError naming the field, or the
    body itself when it is no JSON object."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (kind == "application/json" or (kind.startswith("application/")
                                           and kind.endswith("+json"))):
        raise _body_error(f"send the report as JSON (Content-Type: application/json), not "
                          f"{kind or 'a body with no Content-Type'}")
    raw = await request.body()
    try:
        return ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] != "json_invalid" for e in exc.errors()):
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in exc.errors()]) from exc
        try:  # a byte-order mark, UTF-16 or UTF-32: JSON all the same, as Starlette reads it
            parsed = json.loads(raw)
        except ValueError:
            raise _body_error(exc.errors()[0]["msg"]) from exc
    try:
        return ReportIn.model_validate(parsed)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors()]) from exc


def _body_error(why: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "type": "value_error", "msg": why}])


report_route = locked_route("/api/reports", Action.report_file, post_report_plainly, "POST")
"""Served before the `api` router's declaration of the same path (see `create_web_app`)."""


@api.post("/tips", status_code=202, response_model=Accepted,
          responses={422: {"description": "a field is invalid; the message names it"},
                     429: {"description": "too many tips from this client; see Retry-After"}})
async def post_tip(body: TipIn, request: Request,
                   principal: Annotated[Principal, Depends(allow(Action.tip_file))]
                   ) -> Accepted:
    """Tell the city something without an account. A tip is unverified: the duty officers
    see it; it is never published as it stands."""
    st = web_state(request)
    if not principal.verified:
        await rate_limit(request, TIP_LIMIT)
    problems = []
    if body.kind and body.kind not in st.city.kinds:
        problems.append(("kind", f"unknown kind {body.kind!r}; the city takes: "
                                 f"{', '.join(sorted(st.city.kinds))}"))
    if body.area and body.area not in st.city.areas:
        problems.append(("area", f"unknown area {body.area!r}"))
    if problems:
        raise RequestValidationError([{"loc": ("body", f), "msg": why, "type": "value_error"}
                                      for f, why in problems])
    holder = principal.actor if principal.verified else ""
    tip = Tip(**body.model_dump(), id=new_tip_id(), received_via="api", filed_by=holder)
    await take_tip(st.redis, st.keys, st.city, st.settings, tip, st.producer.send,
                   source=holder or client_of(request))
    return Accepted(id=tip.id)


@api.get("/tips", response_model=Page)
async def get_tips(request: Request,
                   _: Annotated[Principal, Depends(allow(Action.incident_read))],
                   cursor: Cursor = None, limit: Limit = 50) -> Page:
    """Tips, newest first (staff)."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    tips = await recent_tips(st.redis, st.keys, start, limit)
    return _page([t.model_dump(mode="json") for t in tips], start, limit)


@api.get("/surges", response_model=Page)
async def get_surges(request: Request,
                     _: Annotated[Principal, Depends(allow(Action.incident_read))],
                     cursor: Cursor = None, limit: Limit = 50) -> Page:
    """Surges of reports and tips the detector raised, newest first (staff)."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    return _page(await recent_surges(st.redis, st.keys, start, limit), start, limit)


@api.get("/incidents", response_model=Page)
async def get_incidents(request: Request,
                        _: Annotated[Principal, Depends(allow(Action.incident_read))],
                        cursor: Cursor = None, limit: Limit = 50) -> Page:
    """Incidents, newest first."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    return _page(await queries.list_incidents(st.redis, st.keys, limit, start), start, limit)


@api.get("/incidents/{incident_id}")
async def get_incident(incident_id: IncidentId, request: Request,
                       _: Annotated[Principal, Depends(allow(Action.incident_read))]
                       ) -> dict[str, Any]:
    """One incident with the first page of its timeline (`timeline_next`: the cursor of
    the next page at `/api/incidents/{id}/timeline`)."""
    st = web_state(request)
    found = await queries.incident_detail(st.redis, st.keys, incident_id,
                                          timeline_limit=queries.MAX_PAGE)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found


@api.get("/incidents/{incident_id}/timeline", response_model=Page)
async def get_timeline(incident_id: IncidentId, request: Request,
                       _: Annotated[Principal, Depends(allow(Action.incident_read))],
                       cursor: Cursor = None, limit: Limit = queries.MAX_PAGE) -> Page:
    """An incident's timeline, oldest first."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    if not await queries.incident_exists(st.redis, st.keys, incident_id):
        raise HTTPException(404, f"no incident {incident_id}")
    return _page(await queries.timeline_page(st.redis, st.keys, incident_id, start, limit),
                 start, limit)


@api.get("/approvals", response_model=Page)
async def get_approvals(request: Request,
                        _: Annotated[Principal, Depends(allow(Action.approval_read))],
                        all: bool = False, cursor: Cursor = None, limit: Limit = 50) -> Page:
    """Pending approval requests by deadline (`?all=true`: every request, newest first)."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    return _page(await queries.list_approvals(st.redis, st.keys, pending_only=not all,
                                              limit=limit, start=start), start, limit)


@api.get("/statements", response_model=Page)
async def get_statements(request: Request,
                         _: Annotated[Principal, Depends(allow(Action.statement_api))],
                         cursor: Cursor = None, limit: Limit = 50) -> Page:
    """Published statements, newest first."""
    st = web_state(request)
    start, limit = _window(cursor, limit)
    return _page(await queries.published_statements(st.redis, st.keys, limit, start),
                 start, limit)


@api.get("/statements/{statement_id}")
async def get_statement(statement_id: StatementId, request: Request,
                        _: Annotated[Principal, Depends(allow(Action.statement_api))]
                        ) -> dict[str, Any]:
    """One published statement."""
    return await published(web_state(request), statement_id)
