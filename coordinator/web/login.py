"""Logging in and out of the console: a password, then (duty officers, admins, and
approvers who chose one) a TOTP code.

Between the two steps the signed session holds only a half login (who, at which
session epoch, until when, where to go next), good for HALF_LOGIN_S: it opens no page.
An account that must have a second factor and has none yet (the first admin of
`loa up`, an account made before second factors) enrols at that step: the page shows a
fresh secret once, and the first right code from it confirms it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from coordinator.access import Action
from coordinator.accounts import (
    Account,
    check_password,
    confirm_second_factor,
    end_sessions,
    load_account,
    offer_second_factor,
    offered_second_factor,
    second_factor,
    session_epoch,
    use_code,
)
from coordinator.errors import ConfigError
from coordinator.events import AuditEvent
from coordinator.logins import record_login_event
from coordinator.second_factor import (
    KEY_PURPOSE,
    SealError,
    enrolment_uri,
    matching_step,
    new_secret,
    seal,
    unseal,
)
from coordinator.web.auth import locked_router
from coordinator.web.login_guard import (
    count_login_attempt,
    forgive_login_attempts,
    record_failed_login,
    remember_device,
)
from coordinator.web.pages import page
from coordinator.web.security import (
    check_csrf,
    client_of,
    csrf_token,
    current_account,
    start_session,
)
from coordinator.web.state import web_state

login = locked_router(Action.login, include_in_schema=False)
HALF_LOGIN_S = 300
WRONG_LOGIN = "Sai tên đăng nhập hoặc mật khẩu / Wrong username or password"
WRONG_CODE = "Mã sai hoặc đã dùng / Wrong or already used code"
EXPIRED = ("Phiên đăng nhập đã hết hạn, hãy đăng nhập lại / The login has expired; "
           "log in again")
Code = Annotated[str, Form(max_length=20)]
Csrf = Annotated[str, Form()]


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
                       password: Annotated[str, Form(max_length=200)], csrf: Csrf = "",
                       next: Annotated[str, Form(max_length=500)] = "/console") -> Response:
    """Check the password; a wrong one says only that (not which part was wrong). With a
    second factor, on to the code (or to enrolling one)."""
    check_csrf(request, csrf)
    name = username.strip().lower()
    await count_login_attempt(request, name)
    st = web_state(request)
    epoch = await session_epoch(st.redis, st.keys, name)  # before: a change after it wins
    account = await check_password(st.redis, st.keys, name, password)
    if account is None:
        await _audit(request, f"account:{name}", "login.failed", name, factor="password")
        await record_failed_login(request, name, time.time())
        return page(request, "login.html", 401, next=safe_next(next), username=name,
                    error=WRONG_LOGIN)
    sealed = await second_factor(st.redis, st.keys, name)
    if sealed is None and not account.needs_second_factor:
        return await _logged_in(request, account, epoch, next, counted=1)
    request.session.clear()  # a fresh session (and CSRF token) from here on
    request.session["half"] = {"user": name, "epoch": epoch, "next": safe_next(next),
                               "until": time.time() + HALF_LOGIN_S, "enrol": sealed is None}
    csrf_token(request)
    await _audit(request, account.actor, "login.password_ok", name)
    return RedirectResponse("/login/enrol" if sealed is None else "/login/code",
                            status_code=303)


@login.get("/login/code", response_class=HTMLResponse)
async def code_page(request: Request) -> Response:
    """The second step: the code from the authenticator app."""
    half = _half_login(request)
    if half is None or half["enrol"]:
        return RedirectResponse("/login/enrol" if half else "/login", status_code=303)
    return page(request, "login_code.html", username=half["user"])


@login.post("/login/code", response_class=HTMLResponse)
async def code_submit(request: Request, code: Code, csrf: Csrf = "") -> Response:
    """Check the code (once only, within a step of the clock either way)."""
    check_csrf(request, csrf)
    half = _half_login(request)
    if half is None or half["enrol"]:
        return _expired(request)
    name = str(half["user"])
    await count_login_attempt(request, name)
    st = web_state(request)
    account = await load_account(st.redis, st.keys, name)
    sealed = await second_factor(st.redis, st.keys, name)
    if account is None or sealed is None or await session_epoch(
            st.redis, st.keys, name) != half["epoch"]:
        return _expired(request)  # removed or changed since the password was checked
    step = matching_step(_unsealed(request, name, sealed), code, time.time())
    if step is None or not await use_code(st.redis, st.keys, name, half["epoch"], step):
        await _audit(request, account.actor, "login.failed", name, factor="totp",
                     why="wrong" if step is None else "used")
        await record_failed_login(request, name, time.time())
        return page(request, "login_code.html", 401, username=name, error=WRONG_CODE)
    return await _logged_in(request, account, half["epoch"], half["next"], counted=2)


@login.get("/login/enrol", response_class=HTMLResponse)
async def enrol_page(request: Request) -> Response:
    """A first second factor: a fresh secret, shown on this page only (a reload makes a
    new one and forgets the old)."""
    half = _half_login(request)
    if half is None or not half["enrol"]:
        return RedirectResponse("/login/code" if half else "/login", status_code=303)
    name = str(half["user"])
    st = web_state(request)
    account = await load_account(st.redis, st.keys, name)
    secret = new_secret()
    if account is None or not await offer_second_factor(
            st.redis, st.keys, name, half["epoch"], seal(_key(request), name, secret),
            by=account.actor):
        return _expired(request)
    return _enrol(request, name, secret)


@login.post("/login/enrol", response_class=HTMLResponse)
async def enrol_submit(request: Request, code: Code, csrf: Csrf = "") -> Response:
    """Confirm the secret shown with a code from it; then the account is logged in."""
    check_csrf(request, csrf)
    half = _half_login(request)
    if half is None or not half["enrol"]:
        return _expired(request)
    name = str(half["user"])
    await count_login_attempt(request, name)
    st = web_state(request)
    account = await load_account(st.redis, st.keys, name)
    offered = await offered_second_factor(st.redis, st.keys, name)
    if account is None or offered is None:
        return _expired(request)
    secret = _unsealed(request, name, offered)
    step = matching_step(secret, code, time.time())
    if step is None or not await confirm_second_factor(st.redis, st.keys, name,
                                                       half["epoch"], step, by=account.actor):
        await _audit(request, account.actor, "login.failed", name, factor="totp-enrolment")
        await record_failed_login(request, name, time.time())
        # the same secret again: the person who saw it may have added it to the app already
        return _enrol(request, name, secret, status=401, error=WRONG_CODE)
    return await _logged_in(request, account, half["epoch"], half["next"], counted=2)


@login.post("/logout")
async def logout(request: Request, csrf: Csrf = "") -> Response:
    """End the session."""
    check_csrf(request, csrf)
    account = await current_account(request)
    if account is not None:  # every session of the account ends, copied cookies too
        st = web_state(request)
        await end_sessions(st.redis, st.keys, account.username)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def _logged_in(request: Request, account: Account, epoch: str, next: str,
                     counted: int) -> Response:
    """The session starts; what this login counted is forgiven; on to the page asked for
    (or the account's home)."""
    await forgive_login_attempts(request, account.username, times=counted)
    await _audit(request, account.actor, "login.ok", account.username)
    await start_session(request, account, epoch)
    home = {"approver": "/inbox", "translator": "/console/translate"}.get(account.role,
                                                                         "/console")
    answer = RedirectResponse(safe_next(next) if next != "/console" else home,
                              status_code=303)
    remember_device(request, answer, account.username)
    return answer


def _half_login(request: Request) -> dict[str, Any] | None:
    half = request.session.get("half")
    if not isinstance(half, dict) or float(half.get("until", 0)) < time.time():
        request.session.pop("half", None)
        return None
    return half


def _expired(request: Request) -> Response:
    request.session.pop("half", None)
    return page(request, "login.html", 401, next="/console", error=EXPIRED)


def _enrol(request: Request, name: str, secret: str, status: int = 200,
           error: str = "") -> Response:
    shown = page(request, "login_enrol.html", status, username=name, error=error,
                 uri=enrolment_uri(secret, name),
                 secret=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)))
    shown.headers["Cache-Control"] = "no-store"  # the secret stays out of every cache
    return shown


def _key(request: Request) -> bytes:
    try:
        return web_state(request).settings.key_for(KEY_PURPOSE)
    except ConfigError as exc:
        raise HTTPException(503, "the second factor cannot be checked: LOA_SECRET_KEY is "
                                 "not set") from exc


def _unsealed(request: Request, name: str, sealed: str) -> str:
    try:
        return unseal(_key(request), name, sealed)
    except SealError as exc:
        raise HTTPException(503, f"{exc} (an admin can do it)") from exc


async def _audit(request: Request, actor: str, action: str, subject: str,
                 **detail: str) -> None:
    st = web_state(request)
    await record_login_event(st.redis, st.keys, AuditEvent(
        actor=actor, action=action, interface="web", subject=subject,
        detail={"client": client_of(request), **detail}))
