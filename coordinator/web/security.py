"""Who is asking, and may they: sessions, CSRF tokens, roles and rate limits.

Sessions live in a signed cookie (Starlette's SessionMiddleware, itsdangerous);
it holds the username, the account's session generation and the CSRF token. The
account is read from Redis on every request: a removed account, a logout or a new
password (each moves the generation on) ends every session of it at once, copied
cookies included. Every form carries
the session's CSRF token and every POST checks it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request

from coordinator.accounts import Account, load_account, session_generation
from coordinator.web.state import web_state

SESSION_COOKIE = "loa_session"
SESSION_MAX_AGE_S = 12 * 3600


class LoginRequired(Exception):
    """Raised by a page that needs a login; answered with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def check_csrf(request: Request, sent: str) -> None:
    """403 unless `sent` is this session's CSRF token."""
    expected = request.session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise HTTPException(403, "the form has expired or did not come from this site; "
                                 "reload the page and try again")


async def current_account(request: Request) -> Account | None:
    """The logged-in account, or None."""
    username = request.session.get("user")
    if not username:
        return None
    st = web_state(request)
    account = await load_account(st.redis, st.keys, str(username))
    generation = await session_generation(st.redis, st.keys, str(username))
    if account is None or request.session.get("generation") != generation:
        request.session.pop("user", None)  # removed, logged out, or password changed
        return None
    return account


async def logged_in(request: Request) -> Account:
    """Dependency: any logged-in account (else a redirect to /login)."""
    account = await current_account(request)
    if account is None:
        raise LoginRequired(request.url.path)
    return account


async def duty_officer(request: Request) -> Account:
    """Dependency: a duty officer or admin."""
    account = await logged_in(request)
    if not account.can_run_incidents:
        raise HTTPException(403, f"{account.username} is an {account.role}; this page is for "
                                 "duty officers")
    return account


async def start_session(request: Request, account: Account) -> None:
    """Log in: a fresh session (new CSRF token) for this account at its current
    generation."""
    st = web_state(request)
    request.session.clear()
    request.session["user"] = account.username
    request.session["generation"] = await session_generation(st.redis, st.keys,
                                                             account.username)
    csrf_token(request)


@dataclass(frozen=True)
class Limit:
    """At most `count` attempts per `window_s` seconds per client (and per bucket)."""

    bucket: str
    count: int
    window_s: int


# Failed logins: a client gets 20 wrong passwords per 5 minutes, and 10 for one username
# (per client, so that nobody can lock a duty officer out from elsewhere).
LOGIN_PER_CLIENT = Limit("login-ip", 20, 300)
LOGIN_PER_USER = Limit("login-user", 10, 300)
PUBLIC_FORM = Limit("public-form", 20, 600)


def client_of(request: Request) -> str:
    """The client's address (the direct peer; run behind a proxy that sets it right)."""
    return request.client.host if request.client else "unknown"


async def count_attempt(request: Request, limit: Limit, who: str | None = None) -> int:
    """Count one attempt in the current window; returns the window's count (atomic, so a
    burst of concurrent requests cannot all slip under the limit)."""
    st = web_state(request)
    key = st.keys.rate_window(limit.bucket, who or client_of(request))
    async with st.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, limit.window_s, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    if int(count) > limit.count:
        wait = max(int(ttl), 1)
        raise HTTPException(429, f"too many attempts; try again in {wait} s",
                            headers={"Retry-After": str(wait)})
    return int(count)


async def forgive_attempt(request: Request, limit: Limit, who: str | None = None) -> None:
    """Take back one counted attempt (a login that succeeded)."""
    st = web_state(request)
    await st.redis.decr(st.keys.rate_window(limit.bucket, who or client_of(request)))


async def rate_limit(request: Request, limit: Limit, who: str | None = None) -> None:
    """Public forms: every submission counts; 429 once the window's count is used up."""
    await count_attempt(request, limit, who)
