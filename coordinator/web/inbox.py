"""The approver's web inbox: the requests they may decide now, the draft in every language,
and approve / reject with a reason / edit and approve. Decisions go on the broker like the
CLI's and SMS replies; the worker decides what counts and the page says what it said."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from coordinator import queries
from coordinator.access import Action, Principal
from coordinator.approvals.decisions import submit_decision
from coordinator.errors import BrokerUnavailable
from coordinator.events import Decision, RenderedText
from coordinator.outcomes import outcome_of
from coordinator.web.auth import allow
from coordinator.web.console import sms_budgets, texts_from_form
from coordinator.web.ids import ApprovalId
from coordinator.web.pages import page
from coordinator.web.security import check_csrf
from coordinator.web.state import State, web_state

inbox = APIRouter(prefix="/inbox", include_in_schema=False)
Person = Annotated[Principal, Depends(allow(Action.inbox_use))]


def departments_of(st: State, person_id: str) -> set[str]:
    """The departments a person approves for (one at most: config/ names a person once)."""
    department = st.city.department_of(person_id)
    return {department.id} if department else set()


def may_see(st: State, account: Principal, approval: dict[str, Any]) -> bool:
    """Drafts are not public: duty officers, and the approvers asked or of the department."""
    return (account.can_run_incidents or account.person_id in approval["eligible"]
            or approval["department"] in departments_of(st, account.person_id))


async def requests_for(st: State, account: Principal) -> dict[str, list[dict[str, Any]]]:
    """Pending requests: `mine` (I may decide now) and `department` (my department's,
    held by someone else), by deadline."""
    mine, department = [], []
    depts = departments_of(st, account.person_id)
    for approval in await queries.list_approvals(st.redis, st.keys, pending_only=True):
        if account.person_id and account.person_id in approval["eligible"]:
            mine.append(approval)
        elif approval["department"] in depts:
            department.append(approval)
    return {"mine": mine, "department": department}


@inbox.get("", response_class=HTMLResponse)
async def inbox_page(request: Request, account: Person) -> HTMLResponse:
    """What waits for me and my department."""
    st = web_state(request)
    found = await requests_for(st, account)
    return page(request, "inbox.html", account=account, mine=found["mine"],
                department=found["department"], people=st.city.people,
                flash=request.session.pop("flash", None))


@inbox.get("/{approval_id}", response_class=HTMLResponse)
async def request_page(approval_id: ApprovalId, request: Request, account: Person) -> HTMLResponse:
    """One request: the draft in every language and channel, and the decision form."""
    st = web_state(request)
    approval = await queries.approval_detail(st.redis, st.keys, approval_id)
    if approval is None:
        raise HTTPException(404, f"no approval request {approval_id}")
    if not may_see(st, account, approval):
        raise HTTPException(403, f"{approval_id} is for {approval['department']}; "
                                 "drafts are shown to its approvers and the duty officers")
    draft = await queries.draft_of(st.redis, st.keys, approval["draft_id"])
    incident = await queries.incident_row(st.redis, st.keys, approval["incident_id"])
    return page(request, "inbox_request.html", account=account, a=approval,
                texts=draft.get("texts", []), spreading=draft.get("spreading", []),
                incident=incident, may_decide=account.person_id in approval["eligible"]
                and approval["status"] == "pending")


@inbox.post("/{approval_id}", response_class=HTMLResponse)
async def decide_here(approval_id: ApprovalId, request: Request, account: Person) -> HTMLResponse:
    """Approve, reject (with a reason) or edit and approve; the worker's answer is shown
    (e.g. refused: already approved by X at T)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_csrf(request, form.get("csrf", ""))
    verdict = form.get("verdict", "")
    if verdict not in ("approve", "reject", "edit_approve"):
        raise HTTPException(422, "verdict: approve, reject or edit_approve")
    st = web_state(request)
    approval = await queries.approval_detail(st.redis, st.keys, approval_id)
    if approval is None:
        raise HTTPException(404, f"no approval request {approval_id}")
    reason = form.get("reason", "").strip()
    if len(reason) > 2000:
        raise HTTPException(422, f"reason: at most 2000 characters, this has {len(reason)} "
                                 "(go back to shorten it)")
    if verdict == "reject" and not reason:
        return page(request, "decided.html", 422, account=account,
                    message="Từ chối cần lý do / a rejection needs a reason")
    texts = await _edits(st, approval, form) if verdict == "edit_approve" else None
    decision = Decision(id=f"web-{uuid.uuid4().hex[:20]}", approval_id=approval_id,
                        approver_id=account.person_id or account.actor,
                        verdict="reject" if verdict == "reject" else "approve",
                        comment=reason, via="web", texts=texts)
    try:
        await submit_decision(st.redis, st.keys, decision, st.producer.send)
    except BrokerUnavailable as exc:
        raise HTTPException(503, "not recorded (the broker is unreachable); try again") from exc
    outcome = await outcome_of(st.redis, st.keys, decision.id)
    if outcome is None:
        return page(request, "decided.html", 202, account=account,
                    message="received; the result will show in the timeline",
                    back=f"/inbox/{approval_id}")
    return page(request, "decided.html", 200 if outcome["accepted"] else 409, account=account,
                message=outcome["message"], back=f"/inbox/{approval_id}")


async def _edits(st: State, approval: dict[str, Any], form: dict[str, str]
                 ) -> list[RenderedText] | None:
    """The texts the approver changed (None when nothing changed)."""
    typed = texts_from_form(form, await sms_budgets(st, approval["draft_id"]))
    current = {(t["channel"], t["language"]): t
               for t in await queries.draft_texts(st.redis, st.keys, approval["draft_id"])}
    changed = [t for t in typed if (t.channel, t.language) in current and (
        t.body != current[(t.channel, t.language)]["body"].strip()
        or t.title != current[(t.channel, t.language)].get("title", "").strip())]
    return changed or None
