"""A logged-in HTTP session against `loa web`, following the CSRF flow a browser follows."""

from __future__ import annotations

import re
import time

import httpx

from coordinator.second_factor import STEP_S, code_at, step_at

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# The last time step each secret gave a code at in this test run: Loa takes a code once
# (and no older one after it), so the next login of the same account needs a later step.
_last_step: dict[str, int] = {}


def totp_code(secret: str) -> str:
    """A code Loa has not seen yet: the current step's, or the next one's (one step of
    drift is allowed); waits for the clock when both were used."""
    while True:
        now = time.time()
        step = max(_last_step.get(secret, -1) + 1, step_at(now))
        if step <= step_at(now) + 1:
            _last_step[secret] = step
            return code_at(secret, step)
        time.sleep((step - 1) * STEP_S - now + 0.05)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


class WebSession:
    """Cookies kept; `post_form` adds the page's CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30, follow_redirects=True,
                                 headers={"Accept": "text/html"})
        self.csrf = ""

    def get(self, path: str, **kw: object) -> httpx.Response:
        """GET a page and remember its CSRF token."""
        r = self.http.get(path, **kw)  # type: ignore[arg-type]
        found = _CSRF.search(r.text)
        if found:
            self.csrf = found.group(1)
        return r

    def post_form(self, path: str, data: dict[str, str]) -> httpx.Response:
        """POST a form with this session's CSRF token."""
        r = self.http.post(path, data={"csrf": self.csrf, **data})
        found = _CSRF.search(r.text)
        if found:
            self.csrf = found.group(1)
        return r

    def login(self, username: str, password: str, totp_secret: str | None = None
              ) -> httpx.Response:
        """Log in (GET /login first, as a browser would); with `totp_secret`, type the code
        when asked for one."""
        self.get("/login")
        answer = self.post_form("/login", {"username": username, "password": password})
        if totp_secret and answer.url.path == "/login/code":
            answer = self.post_form("/login/code", {"code": totp_code(totp_secret)})
        return answer

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
