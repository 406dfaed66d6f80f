"""The translators' pages: the drafts waiting for approval, and one draft's versions in the
city's other languages to add or correct before approval.

A translator changes nothing else: the versions in the city's own language stay as the duty
officer wrote them, and the new version goes for approval like any edit (the approver sees
and approves every language). Duty officers and admins may use these pages too."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from coordinator import queries
from coordinator.access import Action, Principal
from coordinator.events import RedraftRequested, RenderedText
from coordinator.model.incident import TRANSLATABLE
from coordinator.web.auth import allow
from coordinator.web.console import act_on_incident, budgets_of, texts_from_form
from coordinator.web.ids import IncidentId
from coordinator.web.pages import page
from coordinator.web.security import check_csrf
from coordinator.web.state import web_state

translate = APIRouter(prefix="/console", include_in_schema=False)
Translator = Annotated[Principal, Depends(allow(Action.draft_translate))]


@translate.get("/translate", response_class=HTMLResponse)
async def drafts_to_translate(request: Request, account: Translator) -> HTMLResponse:
    """Open incidents with a draft not yet approved, and the languages each one lacks."""
    st = web_state(request)
    names = st.city.languages.names()
    waiting = [i for i in await queries.list_incidents(st.redis, st.keys, limit=200)
               if i.get("status") in TRANSLATABLE and i.get("draft_id")]
    drafts = {d.id: d for d in await queries.draft_versions(
        st.redis, st.keys, [i["draft_id"] for i in waiting])}  # one round trip
    rows = []
    for incident in waiting:
        draft = drafts.get(incident["draft_id"])
        have = {t.language for t in draft.texts} if draft else set()
        rows.append({**incident, "missing": [name for tag, name in names.items()
                                             if tag not in have]})
    return page(request, "translate_list.html", account=account, rows=rows)


@translate.get("/incidents/{incident_id}/translate", response_class=HTMLResponse)
async def translation_form(incident_id: IncidentId, request: Request, account: Translator
                           ) -> HTMLResponse:
    """The current draft: the city's own language to read, the others to correct, and a
    version to add in each language it lacks."""
    st = web_state(request)
    incident, texts = await _current(request, incident_id)
    own = st.city.languages.default
    return page(request, "translate.html", account=account, incident=incident,
                source=[t for t in texts if t["language"] == own],
                versions=[t for t in texts if t["language"] != own],
                flash=request.session.pop("flash", None))


@translate.post("/incidents/{incident_id}/translate")
async def submit_translation(incident_id: IncidentId, request: Request, account: Translator
                             ) -> Response:
    """A new version of the draft: its texts in the city's own language as they are, and
    the posted ones in every other language; it goes for approval."""
    form = dict(await request.form())
    check_csrf(request, str(form.get("csrf", "")))
    st = web_state(request)
    own = st.city.languages.default
    _incident, texts = await _current(request, incident_id)
    if any(name.endswith(f":{own}") for name in form if name.startswith(("title:", "body:"))):
        raise HTTPException(422, f"body:{own}: a translation leaves the {own} versions as the "
                                 "duty officer wrote them")
    typed = texts_from_form(form, budgets_of(texts), st.city.languages.tags)
    allowed = {*st.city.languages.tags, *(str(t["language"]) for t in texts)}
    stray = next((t for t in typed if t.language not in allowed), None)
    if stray is not None:
        raise HTTPException(422, f"body:{stray.channel}:{stray.language}: "
                                 f"{stray.language!r} is not one of this city's languages")
    kept = [RenderedText.model_validate(t) for t in texts if t["language"] == own]
    event = RedraftRequested(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                             purpose="edit", texts=[*kept, *typed], actor=account.actor,
                             note="translation", via="web")
    return await act_on_incident(request, event, incident_id,
                                 back=f"/console/incidents/{incident_id}/translate")


async def _current(request: Request, incident_id: str
                   ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The incident and its current draft's texts; 404 without either."""
    st = web_state(request)
    found = await queries.incident_row(st.redis, st.keys, incident_id)
    if not found or not found.get("draft_id"):
        raise HTTPException(404, f"no draft of {incident_id} to translate")
    if found.get("status") not in TRANSLATABLE:
        raise HTTPException(409, f"{incident_id} is {found.get('status')}: its draft is not "
                                 "waiting for approval (a duty officer makes the next version)")
    return found, await queries.draft_texts(st.redis, st.keys, found["draft_id"])
