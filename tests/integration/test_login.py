"""Logging in to the console over HTTP against the real `loa web` (and `loa accounts` for
the accounts): the second factor, sessions that end, the client's address behind
proxies, and how failed logins are limited."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from coordinator.accounts import Account, save_account
from coordinator.second_factor import code_at, step_at
from coordinator.state import connect
from tests.integration.factories import audit_events
from tests.integration.stack import Stack
from tests.integration.webclient import WebSession, totp_code

pytestmark = pytest.mark.integration
APPROVER = "nguyen-van-an"
_SECRET_SHOWN = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')


@pytest.fixture(scope="module")
def web(stack: Stack) -> str:
    """The shared stack's web URL (started if no test before did)."""
    return stack.web_url or stack.start_web()


def audit_of(stack: Stack, username: str) -> list[dict[str, Any]]:
    """The audit entries about one account, oldest first."""
    return [e for e in audit_events(stack) if e.get("subject") == username]


def wrong_code(secret: str) -> str:
    """A 6-digit code that no step within reach gives."""
    now = step_at(time.time())
    valid = {code_at(secret, s) for s in range(now - 2, now + 3)}
    return next(c for c in ("000000", "111111", "222222") if c not in valid)


def printed_secret(stdout: str) -> str:
    """The TOTP secret `loa accounts` printed."""
    found = re.search(r"totp secret: ([A-Z2-7]+)", stdout)
    assert found, stdout
    return found.group(1)


def shown_secret(html: str) -> str:
    """The TOTP secret an enrolment page shows."""
    found = _SECRET_SHOWN.search(html)
    assert found, "no secret on the page"
    return found.group(1).replace(" ", "")


def test_an_officer_gives_a_code_and_a_code_opens_one_session_only(stack: Stack,
                                                                   web: str) -> None:
    """After the right password a duty officer is asked for a code; nothing opens before a
    right one, and the same code does not open a second session."""
    password = stack.account("binh", "duty_officer")
    secret = stack.totp_secrets["binh"]
    session = WebSession(web)
    session.get("/login")
    half = session.post_form("/login", {"username": "binh", "password": password})
    assert half.url.path == "/login/code" and "authenticator app" in half.text
    assert session.get("/console").url.path == "/login"  # a half login opens no page
    session.get("/login/code")
    wrong = session.post_form("/login/code", {"code": wrong_code(secret)})
    assert wrong.status_code == 401 and "Wrong or already used code" in wrong.text
    code = totp_code(secret)
    assert session.post_form("/login/code", {"code": code}).url.path == "/console"

    again = WebSession(web)
    again.get("/login")
    assert again.post_form("/login", {"username": "binh", "password": password}
                           ).url.path == "/login/code"
    replayed = again.post_form("/login/code", {"code": code})
    assert replayed.status_code == 401 and again.get("/console").url.path == "/login"
    failed = [a["detail"] for a in audit_of(stack, "binh") if a["action"] == "login.failed"]
    assert [(f["factor"], f["why"]) for f in failed] == [("totp", "wrong"), ("totp", "used")]
    session.close()
    again.close()


def test_the_cli_prints_the_second_factor_once_and_keeps_it_sealed(stack: Stack,
                                                                   web: str) -> None:
    """`loa accounts add` prints an admin's TOTP secret and otpauth URI; Redis holds it
    only sealed; `loa accounts totp` replaces it, ending the sessions and the old codes."""
    done = stack.cli("accounts", "add", "cuong", "--role", "admin", "--password-stdin",
                     stdin="pw-cuong-0123456789\n")
    assert done.returncode == 0, done.stderr
    secret = printed_secret(done.stdout)
    assert f"totp uri: otpauth://totp/Loa:cuong?secret={secret}&issuer=Loa" in done.stdout
    stored = stack.redis.hgetall(stack.keys.account("cuong"))
    assert stored["totp"].startswith("v1.") and not any(secret in v for v in stored.values())

    session = WebSession(web)
    assert session.login("cuong", "pw-cuong-0123456789", secret).url.path == "/console"
    renewed = stack.cli("accounts", "totp", "cuong")
    assert renewed.returncode == 0 and "its sessions ended" in renewed.stdout
    new_secret = printed_secret(renewed.stdout)
    assert new_secret != secret and session.get("/console").url.path == "/login"
    assert session.login("cuong", "pw-cuong-0123456789", secret).status_code == 401
    assert session.login("cuong", "pw-cuong-0123456789", new_secret).url.path == "/console"
    assert stack.cli("accounts", "totp", "nobody-here").returncode == 1
    session.close()


def test_an_approver_gives_a_code_only_when_enrolled(stack: Stack, web: str) -> None:
    """An approver made with `--totp` is asked for a code; one made without logs in with
    the password alone."""
    with_code = stack.account("an-totp", "approver", APPROVER, totp=True)
    plain = stack.account("an-plain", "approver", APPROVER)
    assert "an-plain" not in stack.totp_secrets
    session = WebSession(web)
    session.get("/login")
    asked = session.post_form("/login", {"username": "an-totp", "password": with_code})
    assert asked.url.path == "/login/code"
    done = session.post_form("/login/code", {"code": totp_code(stack.totp_secrets["an-totp"])})
    assert done.url.path == "/inbox"
    other = WebSession(web)
    assert other.login("an-plain", plain).url.path == "/inbox"
    session.close()
    other.close()


def test_an_officer_without_a_second_factor_enrols_at_the_first_login(stack: Stack,
                                                                      web: str) -> None:
    """An admin with no TOTP yet (the first admin of `loa up`, an older account) is shown a
    fresh secret after the password, once, and is logged in by the first right code from
    it; from then on it is asked for a code."""
    async def older_account() -> None:
        redis = connect(stack.redis_service.url)
        try:
            await save_account(redis, stack.keys, Account(
                username="dung", role="admin", person_id="", name="Dung"),
                "pw-dung-0123456789", by="test")
        finally:
            await redis.aclose()

    asyncio.run(older_account())
    session = WebSession(web)
    session.get("/login")
    first = session.post_form("/login", {"username": "dung", "password": "pw-dung-0123456789"})
    assert first.url.path == "/login/enrol" and "otpauth://totp/Loa:dung?secret=" in first.text
    assert first.headers["cache-control"] == "no-store"
    reloaded = session.get("/login/enrol")
    secret = shown_secret(reloaded.text)
    assert secret != shown_secret(first.text)  # each secret is shown once
    wrong = session.post_form("/login/enrol", {"code": wrong_code(secret)})
    assert wrong.status_code == 401 and shown_secret(wrong.text) == secret
    done = session.post_form("/login/enrol", {"code": totp_code(secret)})
    assert done.url.path == "/console"
    assert "account.totp_enrolled" in [a["action"] for a in audit_of(stack, "dung")]
    later = WebSession(web)
    assert later.login("dung", "pw-dung-0123456789", secret).url.path == "/console"
    session.close()
    later.close()


def test_a_recreated_account_is_not_entered_with_an_old_cookie(stack: Stack,
                                                               web: str) -> None:
    """Removing an account and adding it again leaves its old cookies logged out."""
    password = stack.account("eva", "approver", APPROVER)
    session = WebSession(web)
    assert session.login("eva", password).url.path == "/inbox"
    old_cookie = httpx.Client(base_url=web, cookies=dict(session.http.cookies),
                              headers={"Accept": "text/html"}, follow_redirects=True)
    assert old_cookie.get("/inbox").url.path == "/inbox"
    assert stack.cli("accounts", "remove", "eva").returncode == 0
    again = stack.account("eva", "approver", APPROVER)
    assert old_cookie.get("/inbox").url.path == "/login"
    fresh = WebSession(web)
    assert fresh.login("eva", again).url.path == "/inbox"
    old_cookie.close()
    session.close()
    fresh.close()


def test_logout_ends_the_session_even_for_a_copied_cookie(stack: Stack, web: str) -> None:
    """Logging out ends every session of the account, a copied cookie's too."""
    password = stack.account("giang", "approver", APPROVER)
    session = WebSession(web)
    session.login("giang", password)
    assert session.get("/inbox").url.path == "/inbox"
    copied = httpx.Client(base_url=web, cookies=dict(session.http.cookies),
                          headers={"Accept": "text/html"}, follow_redirects=True)
    assert copied.get("/inbox").url.path == "/inbox"
    out = session.post_form("/logout", {})
    assert out.url.path == "/login"
    assert session.get("/inbox").url.path == "/login"
    assert copied.get("/inbox").url.path == "/login"  # the signed cookie alone is not enough
    copied.close()
    session.close()


def test_a_burst_of_wrong_passwords_cannot_slip_past_the_limit(make_stack: Any) -> None:
    """30 wrong passwords at once for one user: 10 are checked, the rest get 429 with
    Retry-After; the right password is refused too until the window ends (from this client,
    whatever X-Forwarded-For it sends, since no proxy is trusted)."""
    private = make_stack()
    private.start_web()
    password = private.account("huy", "duty_officer", "do-quang-huy")
    session = WebSession(private.web_url)
    session.get("/login")

    def attempt(i: int) -> httpx.Response:
        return session.http.post("/login", data={"csrf": session.csrf, "username": "huy",
                                                 "password": f"wrong-{i:04d}-xxxx"},
                                 headers={"X-Forwarded-For": f"198.51.100.{i}"},
                                 follow_redirects=False)

    with ThreadPoolExecutor(max_workers=15) as pool:
        codes = Counter(r.status_code for r in pool.map(attempt, range(30)))
    assert codes == {401: 10, 429: 20}, codes
    locked = session.http.post("/login", data={"csrf": session.csrf, "username": "huy",
                                               "password": password}, follow_redirects=False)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    session.close()


def test_failures_from_many_addresses_slow_the_account_but_not_the_officers_browser(
        make_stack: Any) -> None:
    """Behind a trusted proxy each forwarded address is its own client; after 10 failed
    logins from anywhere the account makes new browsers wait (429, Retry-After at most
    60 s), while the browser the officer logged in from before still gets in."""
    private = make_stack(LOA_TRUSTED_PROXIES="127.0.0.1")
    private.start_web()
    password = private.account("huy", "duty_officer", "do-quang-huy")
    secret = private.totp_secrets["huy"]
    own = WebSession(private.web_url)
    assert own.login("huy", password, secret).url.path == "/console"
    own.post_form("/logout", {})
    stranger = WebSession(private.web_url)
    stranger.get("/login")

    def attempt(client: str, typed: str) -> httpx.Response:
        return stranger.http.post("/login", data={
            "csrf": stranger.csrf, "username": "huy", "password": typed},
            headers={"X-Forwarded-For": f"203.0.113.66, {client}"}, follow_redirects=False)

    # each from another address: no per-client limit is reached
    codes = [attempt(f"198.51.100.{i}", f"wrong-{i:04d}-xxxx").status_code for i in range(11)]
    assert codes == [401] * 11
    # the 11th failure made the account wait 5 s: even the right password is not checked
    slowed = attempt("198.51.100.99", password)
    assert slowed.status_code == 429 and 0 < int(slowed.headers["Retry-After"]) <= 60
    assert "this account" in slowed.text
    assert own.login("huy", password, secret).url.path == "/console"
    clients = {a["detail"]["client"] for a in audit_of(private, "huy")
               if a["action"] == "login.failed"}
    assert clients == {f"198.51.100.{i}" for i in range(11)}
    own.close()
    stranger.close()
