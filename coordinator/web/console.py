"""The duty officer's console: the incidents board, an incident's page and its actions,
and the report form. Every action is an event on the broker (as the CLI's are); the page
waits briefly for its outcome and says what happened."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from channels.segments import segment_count
from coordinator import queries, topics
from coordinator.access import Action, Principal
from coordinator.errors import BrokerUnavailable
from coordinator.events import (
    IncidentClosed,
    IncidentMerged,
    RedraftRequested,
    RenderedText,
    Report,
    Severity,
    utcnow,
)
from coordinator.incidents.surge import recent_surges
from coordinator.outcomes import incident_of_report, outcome_of, report_filed
from coordinator.reports.filing import file_report, report_problems
from coordinator.reports.sources import namespaced_report_id, source_of
from coordinator.reports.tips import attach_tip, recent_tips
from coordinator.statements.promises import set_promise
from coordinator.statements.withdrawal import withdraw_statement
from coordinator.web.auth import allow
from coordinator.web.ids import IncidentId, ReportId, StatementId, TipId
from coordinator.web.incident_view import board_rows, incident_view
from coordinator.web.pages import page
from coordinator.web.security import check_csrf
from coordinator.web.state import State, web_state

console = APIRouter(prefix="/console", include_in_schema=False)
Reader = Annotated[Principal, Depends(allow(Action.incident_read))]
Officer = Annotated[Principal, Depends(allow(Action.incident_steer))]
PURPOSES = ("edit", "update", "correction", "all_clear")
MAX_TEXT = 5000
MAX_SMS = 1600  # Twilio refuses a longer body


@console.get("", response_class=HTMLResponse)
async def board(request: Request, account: Reader, closed: bool = False) -> HTMLResponse:
    """Open incidents, most severe first: playbook, step, holder, countdown, deliveries; and
    the newest tips (unverified) from the public."""
    st = web_state(request)
    staff = st.city.languages.staff[0]
    rows = await board_rows(st, include_closed=closed)
    name = "board_rows.html" if request.query_params.get("fragment") else "board.html"
    return page(request, name, account=account, rows=rows, closed=closed,
                tips=await recent_tips(st.redis, st.keys, 0, 20),
                surges=await recent_surges(st.redis, st.keys, 0, 10),
                kind_names={k: kind.name.get(staff, k) for k, kind in st.city.kinds.items()},
                area_names={c: a.name_in(staff) for c, a in st.city.areas.items()},
                flash=request.session.pop("flash", None))


@console.post("/tips/{tip_id}/attach")
async def attach(tip_id: TipId, request: Request, account: Officer,
                 csrf: Annotated[str, Form()] = "",
                 incident_id: Annotated[str, Form(pattern=r"^INC-[0-9]{5,9}$")] = "") -> Response:
    """Attach a tip to an incident: it joins the timeline, unverified, and changes nothing."""
    check_csrf(request, csrf)
    st = web_state(request)
    refused = await attach_tip(st.redis, st.keys, tip_id, incident_id, account.actor)
    request.session["flash"] = refused or f"{tip_id} attached to {incident_id}"
    return RedirectResponse(f"/console/incidents/{incident_id}" if not refused else "/console",
                            status_code=303)


@console.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(incident_id: IncidentId, request: Request, account: Reader) -> HTMLResponse:
    """The timeline, the drafts with their diffs, the preview, and the actions."""
    st = web_state(request)
    view = await incident_view(st, incident_id)
    if view is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return page(request, "incident.html", account=account, v=view,
                playbooks=sorted(st.playbooks.values(), key=lambda p: p.id),
                flash=request.session.pop("flash", None))


@console.post("/incidents/{incident_id}/drafts")
async def new_version(incident_id: IncidentId, request: Request, account: Officer) -> Response:
    """A new draft version: the officer's wording (edit, update, correction, all-clear)
    or the playbook's after re-selection."""
    form = await request.form()
    check_csrf(request, str(form.get("csrf", "")))
    purpose = str(form.get("purpose", ""))
    texts = None
    if purpose in PURPOSES:
        st = web_state(request)
        current = await queries.current_draft_id(st.redis, st.keys, incident_id)
        texts = texts_from_form(dict(form), await sms_budgets(st, current) if current else None,
                                st.city.languages.tags)
    elif purpose != "reselect":
        raise HTTPException(422, "purpose: one of edit, update, correction, all_clear, reselect")
    try:
        event = RedraftRequested(
            id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
            purpose=purpose,  # type: ignore[arg-type]
            playbook_id=str(form.get("playbook") or "") or None, texts=texts,
            note=str(form.get("note", "")), change=str(form.get("change", "")),
            actor=account.actor, via="web")
    except ValidationError as exc:
        raise HTTPException(422, f"invalid: {exc.errors()[0]['loc']}: "
                                 f"{exc.errors()[0]['msg']}") from exc
    return await act_on_incident(request, event, incident_id)


@console.post("/incidents/{incident_id}/close")
async def close(incident_id: IncidentId, request: Request, account: Officer,
                csrf: Annotated[str, Form()] = "",
                reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Close the incident."""
    check_csrf(request, csrf)
    event = IncidentClosed(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                           reason=reason, actor=account.actor, via="web")
    return await act_on_incident(request, event, incident_id)


@console.post("/incidents/{incident_id}/fact")
async def state_fact(incident_id: IncidentId, request: Request, account: Officer,
                     fact: Annotated[str, Form(min_length=3, max_length=1000)],
                     source: Annotated[str, Form(min_length=2, max_length=300)],
                     csrf: Annotated[str, Form()] = "") -> Response:
    """State the verified fact and its source: the correction is drafted again with them."""
    check_csrf(request, csrf)
    st = web_state(request)
    playbook = await queries.incident_playbook(st.redis, st.keys, incident_id)
    event = RedraftRequested(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                             purpose="reselect", playbook_id=playbook or None, fact=fact,
                             fact_source=source, note="fact stated", actor=account.actor,
                             via="web")
    return await act_on_incident(request, event, incident_id)


@console.post("/incidents/{incident_id}/promise")
async def promise(incident_id: IncidentId, request: Request, account: Officer,
                  minutes: Annotated[int, Form(ge=0, le=10080)],
                  csrf: Annotated[str, Form()] = "") -> Response:
    """Promise the next update within `minutes` (0 withdraws the promise)."""
    check_csrf(request, csrf)
    st = web_state(request)
    now = utcnow()
    due = now + timedelta(minutes=minutes) if minutes else None
    try:
        said = await set_promise(st.redis, st.keys, incident_id, due, account.actor, "web", now)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    request.session["flash"] = said
    return RedirectResponse(f"/console/incidents/{incident_id}", status_code=303)


@console.post("/incidents/{incident_id}/merge")
async def merge(incident_id: IncidentId, request: Request, account: Officer,
                into: Annotated[str, Form(pattern=r"^INC-[0-9]{5,9}$")],
                csrf: Annotated[str, Form()] = "",
                reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Merge this incident into another: it closes, its reports count there."""
    check_csrf(request, csrf)
    event = IncidentMerged(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                           into=into, reason=reason, actor=account.actor, via="web")
    return await act_on_incident(request, event, incident_id)


@console.post("/statements/{statement_id}/withdraw")
async def withdraw(statement_id: StatementId, request: Request, account: Officer,
                   csrf: Annotated[str, Form()] = "",
                   reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Withdraw a statement sent in error: what is not handed over yet stops at once."""
    check_csrf(request, csrf)
    st = web_state(request)
    done = await withdraw_statement(st.redis, st.keys, statement_id, account.actor, reason,
                                    "web", utcnow())
    if not done.incident_id:
        raise HTTPException(404 if "no published" in done.message else 422, done.message)
    request.session["flash"] = done.message
    return RedirectResponse(f"/console/incidents/{done.incident_id}", status_code=303)


def _typed_slots(form: dict[str, Any]
                 ) -> tuple[dict[tuple[str, str], dict[str, str]], set[tuple[str, ...]]]:
    """(channel, language) -> its typed title and body, and the `optional:` slots (versions
    a draft did not have); one of those left empty (nobody translated it) is left out."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    optional = {tuple(name.split(":")[1:]) for name in form if name.startswith("optional:")}
    for name, value in form.items():
        part, _, slot = name.partition(":")
        if part in ("title", "body") and slot.count(":") == 1:
            channel, language = slot.split(":")
            found.setdefault((channel, language), {})[part] = str(value).strip()
    return {slot: fields for slot, fields in found.items()
            if slot not in optional or any(fields.values())}, optional


def texts_from_form(form: dict[str, Any], budgets: Mapping[tuple[str, str], int] | None = None,
                    languages: Collection[str] = ()) -> list[RenderedText]:
    """`title:web:vi` / `body:sms:en` fields as texts; 422 naming a bad or empty field, a
    version added in a language the city does not declare (`languages`, when given: a
    draft's own versions stay editable whatever their language), or an SMS longer than a
    provider takes or than the playbook's segment `budgets` allow ((channel, language) ->
    segments; a language the playbook has none for is held to the largest). A version in
    another language marked `optional:sms:fr` may be left empty: it is then left out."""
    texts = []
    slots, added = _typed_slots(form)
    for (channel, language), fields in sorted(slots.items()):
        if languages and (channel, language) in added and language not in languages:
            raise HTTPException(422, f"body:{channel}:{language}: {language!r} is not one of "
                                     f"this city's languages ({', '.join(languages)})")
        if not fields.get("body"):
            raise HTTPException(422, f"body:{channel}:{language}: the text may not be empty "
                                     "(go back: what you typed is still in the form)")
        if len(fields["body"]) > MAX_TEXT:
            raise HTTPException(422, f"body:{channel}:{language}: at most {MAX_TEXT} characters, "
                                     f"this has {len(fields['body'])} (go back to shorten it)")
        try:
            texts.append(RenderedText(channel=channel,  # type: ignore[arg-type]
                                      language=language, title=fields.get("title", ""),
                                      body=fields["body"]))
        except ValidationError as exc:
            raise HTTPException(422, f"{channel}:{language}: {exc.errors()[0]['msg']}") from exc
    if not texts:
        raise HTTPException(422, "texts: a new version needs its text")
    largest = max((b for (ch, _), b in (budgets or {}).items() if ch == "sms"), default=None)
    for text in texts:
        if text.channel == "sms":
            _check_sms(text, (budgets or {}).get(("sms", text.language), largest))
    return texts


def _check_sms(text: RenderedText, budget: int | None) -> None:
    """422 naming the SMS text when no provider would take it, or it is over its budget."""
    where = f"body:sms:{text.language}"
    if len(text.body) > MAX_SMS:
        raise HTTPException(422, f"{where}: an SMS takes at most {MAX_SMS} characters (Twilio's "
                                 f"limit), this has {len(text.body)} (go back to shorten it)")
    segments = segment_count(text.body)
    if budget is not None and segments > budget:
        raise HTTPException(422, f"{where}: {segments} SMS segments, over the playbook's budget "
                                 f"of {budget} (go back to shorten it)")


async def sms_budgets(st: State, draft_id: str) -> dict[tuple[str, str], int]:
    """(channel, language) -> the playbook's segment budget, from a draft's texts."""
    return budgets_of(await queries.draft_texts(st.redis, st.keys, draft_id))


def budgets_of(texts: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(channel, language) -> segment budget, of a draft's stored texts. Pure."""
    return {(t["channel"], t["language"]): int(t["segment_budget"])
            for t in texts if t.get("segment_budget")}


async def act_on_incident(request: Request,
                          event: RedraftRequested | IncidentClosed | IncidentMerged,
                          incident_id: str, back: str = "") -> Response:
    """Put an action on the incident's topic; back to its page (or `back`) with what came
    of it."""
    st = web_state(request)
    if not await queries.incident_exists(st.redis, st.keys, incident_id):
        raise HTTPException(404, f"no incident {incident_id}")
    try:
        await st.producer.send(topics.INCIDENT_EVENTS, incident_id, event.to_bytes())
    except BrokerUnavailable as exc:
        raise HTTPException(503, "not recorded (the broker is unreachable); try again") from exc
    outcome = await outcome_of(st.redis, st.keys, event.id)
    request.session["flash"] = (outcome["message"] if outcome
                                else "received; the timeline will show the result")
    return RedirectResponse(back or f"/console/incidents/{incident_id}", status_code=303)


@console.get("/reports/new", response_class=HTMLResponse)
async def report_form(request: Request, account: Officer, attach_to: str = "") -> HTMLResponse:
    """The report form (the API's rules; a duty officer may also choose the playbook)."""
    return page(request, "report_form.html", account=account, **_form_context(
        web_state(request), {"attach_to": attach_to}, {}))


def _form_context(st: State, values: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    kinds = sorted(st.city.kinds)
    return {"values": values, "errors": errors, "kinds": kinds,
            "severities": [s.value for s in Severity],
            "playbooks": sorted(st.playbooks),
            "claim_kinds": sorted(k for k, kind in st.city.kinds.items() if kind.claims)}


@console.post("/reports/new", response_class=HTMLResponse)
async def file_from_console(request: Request, account: Officer) -> Response:
    """File the report; on a problem the form comes back with each field's message."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_csrf(request, form.pop("csrf", ""))
    st = web_state(request)
    values = {k: form.get(k, "").strip() for k in (
        "kind", "severity", "area", "title", "details", "playbook", "attach_to", "exercise",
        "drill_list", "claim", "spreading")}
    errors: dict[str, str] = {}
    report = None
    try:
        report = Report(id=namespaced_report_id(account, None), kind=values["kind"],
                        severity=values["severity"],  # type: ignore[arg-type]
                        area=values["area"], title=values["title"], details=values["details"],
                        received_via="web", source=source_of(account),
                        attach_to=values["attach_to"] or None,
                        playbook=values["playbook"] or None,
                        exercise=values["exercise"] == "1",
                        drill_list=values["drill_list"] or None, claim=values["claim"],
                        spreading=[line.strip() for line in values["spreading"].splitlines()
                                   if line.strip()])
    except ValidationError as exc:
        errors = {str(e["loc"][0]): e["msg"] for e in exc.errors()}
    if report is not None:
        errors = dict(report_problems(report, st.city))
        if report.playbook and report.playbook not in st.playbooks:
            errors["playbook"] = f"no playbook {report.playbook!r}"
    if errors or report is None:
        return page(request, "report_form.html", 422, account=account,
                    **_form_context(st, values, errors))
    try:
        await file_report(st.redis, st.keys, st.producer, report)
    except BrokerUnavailable:
        request.session["flash"] = (f"report {report.id} is kept and will be sent when the "
                                    "broker answers")
        return RedirectResponse("/console", status_code=303)
    return RedirectResponse(f"/console/reports/{report.id}", status_code=303)


@console.get("/reports/{report_id}")
async def report_status(report_id: ReportId, request: Request, account: Reader) -> Response:
    """Where a filed report went: its incident's page once it was taken in (waited for a
    few seconds); 404 at once for an id nobody filed."""
    st = web_state(request)
    if not await report_filed(st.redis, st.keys, report_id):
        raise HTTPException(404, f"no report {report_id}")
    incident_id = await incident_of_report(st.redis, st.keys, report_id)
    if incident_id is None:
        request.session["flash"] = f"report {report_id} received; it will appear here shortly"
        return RedirectResponse("/console", status_code=303)
    request.session["flash"] = f"report {report_id} is in {incident_id}"
    return RedirectResponse(f"/console/incidents/{incident_id}", status_code=303)

