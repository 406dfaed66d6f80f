"""Logging in and out of the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from coordinator.accounts import check_password
from coordinator.events import AuditEvent
from coordinator.state import queue_audit
from coordinator.web.pages import page
from coordinator.web.security import (
    LOGIN_PER_CLIENT,
    LOGIN_PER_USER,
    check_csrf,
    check_limit,
    count_attempt,
    current_account,
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
    await check_limit(request, LOGIN_PER_CLIENT)
    await check_limit(request, LOGIN_PER_USER, who=name)
    st = web_state(request)
    account = await check_password(st.redis, st.keys, name, password)
    async with st.redis.pipeline(transaction=True) as pipe:
        queue_audit(pipe, st.keys, AuditEvent(
            actor=account.actor if account else f"account:{name}",
            action="login.ok" if account else "login.failed", interface="web",
            subject=name, detail={"client": request.client.host if request.client else ""}))
        await pipe.execute()
    if account is None:
        await count_attempt(request, LOGIN_PER_CLIENT)
        await count_attempt(request, LOGIN_PER_USER, who=name)
        return page(request, "login.html", 401, next=safe_next(next), username=name,
                    error="Sai tên đăng nhập hoặc mật khẩu / Wrong username or password")
    start_session(request, account)
    home = "/inbox" if account.role == "approver" else "/console"
    return RedirectResponse(safe_next(next) if next != "/console" else home, status_code=303)


@login.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session."""
    check_csrf(request, csrf)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
