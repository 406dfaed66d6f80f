"""The page behind an approval email's link: GET shows the draft and asks; only a POST
decides. A link names one request and one person, expires, and works once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from coordinator import queries
from coordinator.access import Action
from coordinator.approvals.decisions import submit_decision
from coordinator.approvals.links import (
    InvalidLink,
    LinkClaims,
    claim_link,
    link_spent,
    release_link,
    verify_link,
)
from coordinator.errors import BrokerUnavailable
from coordinator.events import Decision, utcnow
from coordinator.outcomes import outcome_of
from coordinator.web.auth import locked_router
from coordinator.web.state import State, web_state

decide = locked_router(Action.signed_link, prefix="/decide", include_in_schema=False)


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _claims(st: State, token: str) -> LinkClaims:
    now = utcnow()
    secrets = st.settings.link_secrets(now)  # the current key, and old ones in their grace
    if not secrets:
        raise InvalidLink("links are not enabled on this server")
    return verify_link(secrets, token, now)


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = request.app.state.loa.city.languages.staff[0]  # approvers read the staff's
    return _templates(request).TemplateResponse(request, name, {"lang": lang, **context},
                                                status_code=status)


@decide.get("/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, request: Request) -> HTMLResponse:
    """The draft, the deadline, and a form to approve or reject: nothing is decided yet."""
    st = web_state(request)
    try:
        claims = _claims(st, token)
    except InvalidLink as exc:
        return _page(request, "decided.html", 400, message=str(exc))
    approval = await queries.approval_detail(st.redis, st.keys, claims.approval_id)
    if approval is None:
        return _page(request, "decided.html", 404, message="unknown request")
    if await link_spent(st.redis, st.keys, claims.nonce):
        return _page(request, "decided.html", 409, message="this link was already used")
    draft = await queries.draft_of(st.redis, st.keys, approval["draft_id"])
    texts = sorted(draft.get("texts", []), key=lambda t: (t["channel"] != "web", t["channel"]))
    return _page(request, "decide.html", approval=approval, texts=texts, person=claims.person_id,
                 spreading=draft.get("spreading", []), token=token)


@decide.post("/{token}", response_class=HTMLResponse)
async def decide_by_link(token: str, request: Request,
                         verdict: Annotated[str, Form(pattern="^(approve|reject)$")],
                         reason: Annotated[str, Form(max_length=2000)] = "") -> HTMLResponse:
    """Decide, once: the decision id comes from the link, so a second POST changes nothing."""
    st = web_state(request)
    try:
        claims = _claims(st, token)
    except InvalidLink as exc:
        return _page(request, "decided.html", 400, message=str(exc))
    if verdict == "reject" and not reason.strip():  # before the link is spent
        return _page(request, "decided.html", 422, message="a rejection needs a reason")
    decision = Decision(id=f"link-{claims.nonce}"[:80].replace(" ", ""),
                        approval_id=claims.approval_id, approver_id=claims.person_id,
                        verdict=verdict,  # type: ignore[arg-type]
                        comment=reason, via="email")
    if not await claim_link(st.redis, st.keys, claims.nonce):
        outcome = await outcome_of(st.redis, st.keys, decision.id, timeout_s=0)
        message = outcome["message"] if outcome else "this link was already used"
        return _page(request, "decided.html", 409, message=message)
    try:
        await submit_decision(st.redis, st.keys, decision, st.producer.send)
    except BrokerUnavailable:
        await release_link(st.redis, st.keys, claims.nonce)
        return _page(request, "decided.html", 503, message="not recorded, please try again")
    found = await outcome_of(st.redis, st.keys, decision.id)
    if found is not None:
        return _page(request, "decided.html", 200 if found["accepted"] else 409,
                     message=found["message"])
    return _page(request, "decided.html", 202, message="received; the result will show in "
                 "the incident's timeline")
