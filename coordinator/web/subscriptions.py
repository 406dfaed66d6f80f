"""Leaving: the one-click unsubscribe link every statement email carries (RFC 8058)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from coordinator.access import Action
from coordinator.events import utcnow
from coordinator.subscribers.optin import leave
from coordinator.subscribers.unsubscribe import subscriber_of
from coordinator.web.auth import locked_router
from coordinator.web.pages import page, words_of
from coordinator.web.state import web_state

subscriptions = locked_router(Action.signed_link, prefix="/unsubscribe",
                              include_in_schema=False)


def _page(request: Request, message: str, status: int = 200) -> HTMLResponse:
    return page(request, "decided.html", status, message=message)


@subscriptions.get("/{token}", response_class=HTMLResponse)
async def confirm(token: str, request: Request) -> HTMLResponse:
    """Ask before unsubscribing (mail scanners follow GET links)."""
    # ?lang= is the subscriber's language, which the email's link carries
    st, _ = web_state(request), words_of(request)
    if subscriber_of(st.settings.link_secrets(utcnow()), token) is None:
        return _page(request, _("This link cannot be used."), 400)
    return page(request, "unsubscribe_confirm.html")


@subscriptions.post("/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """Unsubscribe at once (a mail client's one-click POST, or the form above)."""
    st = web_state(request)
    sub_id = subscriber_of(st.settings.link_secrets(utcnow()), token)
    left = (await leave(st.redis, st.keys, sub_id, "link", utcnow(), interface="email")
            if sub_id else None)
    _ = words_of(request)
    if left is None:
        return _page(request, _("This link cannot be used."), 400)
    return _page(request, _("You are unsubscribed."))
