"""Who is asking: sessions, CSRF tokens and rate limits (what they may do is decided in
one place, coordinator.access, through coordinator.web.auth).

Sessions live in a signed cookie (Starlette's SessionMiddleware, itsdangerous);
it holds the username, the account's session epoch and the CSRF token. The account is
read from Redis on every request: a removed account, a logout, a new password or a new
second factor (each makes a new random epoch) ends every session of it at once, copied
cookies included, and a re-created account never matches an old cookie. Every form
carries the session's CSRF token and every POST checks it.

The client's address is the direct peer, or, when that peer is one of
LOA_TRUSTED_PROXIES, the right-most X-Forwarded-For address that is not itself a trusted
proxy (everything left of it was written by whoever is asking).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Sequence

from fastapi import HTTPException, Request
from pydantic import IPvAnyNetwork

from coordinator.accounts import Account, load_account, session_epoch
from coordinator.errors import LoaError
from coordinator.rate_limits import Limit, count_in_window, uncount_in_window
from coordinator.web.state import web_state

SESSION_COOKIE = "loa_session"
SESSION_MAX_AGE_S = 12 * 3600


class LoginRequired(LoaError):
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
    epoch = await session_epoch(st.redis, st.keys, str(username))
    if account is None or not epoch or not hmac.compare_digest(
            str(request.session.get("epoch", "")), epoch):
        request.session.pop("user", None)  # removed, re-created, logged out, or changed
        return None
    return account


async def start_session(request: Request, account: Account, epoch: str) -> None:
    """Log in: a fresh session (new CSRF token) for this account at `epoch`, the one its
    password (and code) were checked at."""
    request.session.clear()
    request.session["user"] = account.username
    request.session["epoch"] = epoch
    csrf_token(request)


# Failed logins: a client gets 20 wrong passwords per 5 minutes, and 10 for one username
# (per client, so that nobody can lock a duty officer out from elsewhere); the account-wide
# backoff on top of these is in `coordinator.logins` (`login_guard` applies it).
LOGIN_PER_CLIENT = Limit("login-ip", 20, 300)
LOGIN_PER_USER = Limit("login-user", 10, 300)
PUBLIC_FORM = Limit("public-form", 20, 600)


def client_of(request: Request) -> str:
    """The client's address: the direct peer, or what trusted proxies say it is."""
    peer = request.client.host if request.client else "unknown"
    trusted = web_state(request).settings.trusted_proxies
    if not trusted:
        return peer
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


def client_address(peer: str, forwarded_for: Sequence[str],
                   trusted: Sequence[IPvAnyNetwork]) -> str:
    """Who is asking: `peer` unless it is a trusted proxy; then, walking X-Forwarded-For
    (every header, in order) from the right, the first address not itself trusted. When
    the proxies say nothing usable, the last trusted hop is the client."""
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    client = peer
    for hop in [peer, *reversed(hops)]:
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:  # written by a trusted proxy (else we would have stopped)
            return client
        client = str(address)
        if not any(address in network for network in trusted):
            return client
    return client


async def count_attempt(request: Request, limit: Limit, who: str | None = None) -> int:
    """Count one attempt in the current window; returns the window's count (atomic, so a
    burst of concurrent requests cannot all slip under the limit)."""
    st = web_state(request)
    window = await count_in_window(st.redis, st.keys, limit, who or client_of(request))
    if window.count > limit.count:
        wait = max(window.ttl_s, 1)
        raise HTTPException(429, f"too many attempts; try again in {wait} s",
                            headers={"Retry-After": str(wait)})
    return window.count


async def forgive_attempt(request: Request, limit: Limit, who: str | None = None) -> None:
    """Take back one counted attempt (a login that succeeded)."""
    st = web_state(request)
    await uncount_in_window(st.redis, st.keys, limit, who or client_of(request))


async def rate_limit(request: Request, limit: Limit, who: str | None = None) -> None:
    """Public forms: every submission counts; 429 once the window's count is used up."""
    await count_attempt(request, limit, who)
