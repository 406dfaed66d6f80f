"""`/d/<id>`: the short link an SMS prompt carries when the draft is too long to quote. It
stands for one signed decision link (`/decide/<token>`, which shows the whole draft and
asks before deciding) and expires with it; the id is keyed, so it cannot be guessed."""

from __future__ import annotations

import re

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse

from coordinator import queries
from coordinator.access import Action
from coordinator.web.auth import locked_router
from coordinator.web.state import web_state

short_links = locked_router(Action.signed_link, prefix="/d", include_in_schema=False)
SHORT_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")


@short_links.get("/{short_id}")
async def follow_short_link(short_id: str, request: Request) -> RedirectResponse:
    """To the signed decision page this short link stands for; 404 when unknown or expired."""
    st = web_state(request)
    token = (await queries.short_link_target(st.redis, st.keys, short_id)
             if SHORT_ID.match(short_id) else None)
    if not token:
        raise HTTPException(404, "this link is unknown or has expired")
    return RedirectResponse(f"/decide/{token}", status_code=303)
