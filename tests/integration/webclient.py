"""A logged-in HTTP session against `loa web`, following the CSRF flow a browser follows."""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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

    def login(self, username: str, password: str) -> httpx.Response:
        """Log in (GET /login first, as a browser would)."""
        self.get("/login")
        return self.post_form("/login", {"username": username, "password": password})

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
