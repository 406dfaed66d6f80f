"""Logging in and out of the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from coordinator.accounts import check_password, end_sessions
from coordinator.events import AuditEvent
from coordinator.state import queue_audit
from coordinator.web.pages import page
from coordinator.web.security import (
    LOGIN_PER_CLIENT,
    LOGIN_PER_USER,
    check_csrf,
    client_of,
    count_attempt,
    current_account,
    forgive_attempt,
    start_session,
)
from coordinator.web.state import web_state

login = APIRouter(include_in_schema=False)


def safe_next(target: str) -> str:
    """Only a path on this site (no `//host` or scheme): an open redirect is refused."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


@login.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/console") -> Response:
    """The login form (straight on if already logged in)."""
    account = await current_account(request)
    if account is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", next=safe_next(next))


@login.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request, username: Annotated[str, Form(max_length=80)],
                       password: Annotated[str, Form(max_length=200)],
                       csrf: Annotated[str, Form()] = "",
                       next: Annotated[str, Form(max_length=500)] = "/console") -> Response:
    """Check the password; a wrong one says only that (not which part was wrong)."""
    check_csrf(request, csrf)
    name = username.strip().lower()
    per_user = f"{name}@{client_of(request)}"
    await count_attempt(request, LOGIN_PER_CLIENT)  # counted first: a burst cannot slip by
    await count_attempt(request, LOGIN_PER_USER, who=per_user)
    st = web_state(request)
    account = await check_password(st.redis, st.keys, name, password)
    async with st.redis.pipeline(transaction=True) as pipe:
        queue_audit(pipe, st.keys, AuditEvent(
            actor=account.actor if account else f"account:{name}",
            action="login.ok" if account else "login.failed", interface="web",
            subject=name, detail={"client": request.client.host if request.client else ""}))
        await pipe.execute()
    if account is None:
        return page(request, "login.html", 401, next=safe_next(next), username=name,
                    error="Sai tên đăng nhập hoặc mật khẩu / Wrong username or password")
    await forgive_attempt(request, LOGIN_PER_CLIENT)  # only failures count
    await forgive_attempt(request, LOGIN_PER_USER, who=per_user)
    await start_session(request, account)
    home = "/inbox" if account.role == "approver" else "/console"
    return RedirectResponse(safe_next(next) if next != "/console" else home, status_code=303)


@login.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session."""
    check_csrf(request, csrf)
    account = await current_account(request)
    if account is not None:  # every session of the account ends, copied cookies too
        st = web_state(request)
        await end_sessions(st.redis, st.keys, account.username)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
