"""How many login attempts an account gets, and from where.

Three limits, each a wrong password or a wrong code counting once:

- per client (20 per 5 minutes) and per (account, client) (10 per 5 minutes), as before:
  a stranger's failures never count against the officer's own browser there;
- per account, from anywhere: after 10 failures within 15 minutes each further failure
  makes the account wait 5, 10, 20, 40 and then at most 60 seconds before the next
  attempt (429 with Retry-After). This slows a guesser spread over many addresses, which
  the per-client limits cannot see;
- a browser that has logged in to the account before carries a signed device cookie for
  it; the account-wide wait does not apply to it (it has a limit of its own, 10 per 5
  minutes). So a stranger can slow down logins to an officer's account from new browsers
  by at most a minute at a time, but cannot lock the officer out of the browser they use.
"""

from __future__ import annotations

import math
import secrets
import time

from fastapi import HTTPException, Request, Response

from coordinator.errors import ConfigError
from coordinator.logins import account_waits_until
from coordinator.logins import record_failed_login as record_account_failure
from coordinator.rate_limits import Limit
from coordinator.signing import BadSignature, sign, unsign
from coordinator.web.security import (
    LOGIN_PER_CLIENT,
    LOGIN_PER_USER,
    client_of,
    count_attempt,
    forgive_attempt,
)
from coordinator.web.state import web_state

LOGIN_PER_DEVICE = Limit("login-device", 10, 300)
DEVICE_COOKIE = "loa_device"
DEVICE_MAX_AGE_S = 90 * 24 * 3600
DEVICE_KEY_PURPOSE = "login-device"


def _device_key(request: Request) -> bytes | None:
    try:
        return web_state(request).settings.key_for(DEVICE_KEY_PURPOSE)
    except ConfigError:  # without LOA_SECRET_KEY no browser is known: only slower
        return None


def known_device(request: Request, username: str) -> str | None:
    """The id of this browser when it logged in to `username` before (its signed device
    cookie), else None."""
    key, cookie = _device_key(request), request.cookies.get(DEVICE_COOKIE, "")
    if key is None or not cookie:
        return None
    try:
        data = unsign(key, cookie)
    except (BadSignature, ValueError):
        return None
    return str(data["d"]) if data.get("u") == username and data.get("d") else None


def remember_device(request: Request, response: Response, username: str) -> None:
    """Mark this browser as one `username` logs in from (after a complete login)."""
    key = _device_key(request)
    if key is None:
        return
    device = known_device(request, username) or secrets.token_urlsafe(12)
    response.set_cookie(DEVICE_COOKIE, sign(key, {"u": username, "d": device}),
                        max_age=DEVICE_MAX_AGE_S, httponly=True, samesite="lax",
                        secure=web_state(request).settings.web_url().startswith("https:"),
                        path="/login")


def _buckets(request: Request, username: str) -> list[tuple[Limit, str | None]]:
    buckets: list[tuple[Limit, str | None]] = [
        (LOGIN_PER_CLIENT, None), (LOGIN_PER_USER, f"{username}@{client_of(request)}")]
    device = known_device(request, username)
    if device:
        buckets.append((LOGIN_PER_DEVICE, f"{username}@{device}"))
    return buckets


async def count_login_attempt(request: Request, username: str) -> None:
    """Count one attempt (a password or a code) at `username`; 429 with Retry-After when
    a limit is used up or the account must wait."""
    for limit, who in _buckets(request, username):  # counted first: a burst cannot slip by
        await count_attempt(request, limit, who=who)
    if known_device(request, username):
        return
    st = web_state(request)
    wait = await account_waits_until(st.redis, st.keys, username) - time.time()
    if wait > 0:
        seconds = max(math.ceil(wait), 1)
        raise HTTPException(429, f"too many failed logins for this account; try again in "
                                 f"{seconds} s", headers={"Retry-After": str(seconds)})


async def forgive_login_attempts(request: Request, username: str, times: int = 1) -> None:
    """Take back what a login that succeeded counted (only failures count)."""
    for limit, who in _buckets(request, username):
        for _ in range(times):
            await forgive_attempt(request, limit, who=who)


async def record_failed_login(request: Request, username: str, now: float) -> int:
    """Count a failed login against the account from anywhere; returns the seconds it
    must now wait (0 while it has failures to spare)."""
    st = web_state(request)
    return await record_account_failure(st.redis, st.keys, username, now)
