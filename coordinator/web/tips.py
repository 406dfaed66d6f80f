"""The public tip form: residents and journalists tell the city something without an account.
Limited per client and in size; what it takes is unverified (see coordinator.reports.tips)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from coordinator.access import Action
from coordinator.rate_limits import Limit
from coordinator.reports.tips import (
    TIPS_PER_CLIENT,
    TIPS_WINDOW_S,
    Tip,
    TipIn,
    new_tip_id,
    take_tip,
)
from coordinator.web.auth import locked_router
from coordinator.web.pages import page, words_of
from coordinator.web.security import check_csrf, client_of, rate_limit
from coordinator.web.state import web_state

TIP_LIMIT = Limit("tip", TIPS_PER_CLIENT, TIPS_WINDOW_S)
tips = locked_router(Action.tip_file, include_in_schema=False)


def _form(request: Request, values: dict[str, Any], errors: dict[str, str], status: int = 200,
          done: str = "") -> HTMLResponse:
    st = web_state(request)
    return page(request, "tip.html", status, values=values, errors=errors, done=done,
                kinds=sorted(st.city.kinds.values(), key=lambda k: k.id))


@tips.get("/tip", response_class=HTMLResponse)
async def tip_form(request: Request) -> HTMLResponse:
    """The form."""
    return _form(request, {}, {})


@tips.post("/tip", response_class=HTMLResponse)
async def tip_submit(request: Request) -> HTMLResponse:
    """Keep the tip for the duty officers; every bad field is named and what was typed kept."""
    form = await request.form()
    check_csrf(request, str(form.get("csrf", "")))
    await rate_limit(request, TIP_LIMIT)
    st = web_state(request)
    _ = words_of(request)
    values = {k: str(form.get(k, "")).strip() for k in ("text", "kind", "area")}
    errors: dict[str, str] = {}
    if values["kind"] and values["kind"] not in st.city.kinds:
        errors["kind"] = _("Choose a kind from the list.")
    if values["area"] and values["area"] not in st.city.areas:
        errors["area"] = _("Choose an area from the list.")
    try:
        taken = TipIn(text=values["text"], kind=values["kind"] or None,
                      area=values["area"] or None)
    except ValidationError:
        errors["text"] = _("Write 10 to 2000 characters.")
    if errors:
        return _form(request, values, errors, 422)
    tip = Tip(**taken.model_dump(), id=new_tip_id(), received_via="web")
    await take_tip(st.redis, st.keys, st.city, st.settings, tip, st.producer.send,
                   source=client_of(request))
    return _form(request, {}, {}, done=tip.id)
