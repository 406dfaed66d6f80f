"""Point the official twilio SDK at another base URL (our local Twilio-compatible endpoint),
by configuration and without patching: HTTP clients that rewrite the API host."""

from __future__ import annotations

import base64
import functools
import logging
from typing import Any
from urllib.parse import quote_plus, urlencode

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_API = "https://api.twilio.com"
FORM = "application/x-www-form-urlencoded"
TIMEOUT_S = 10.0
"""How long a request to Twilio may take, all of it, before it fails (a TimeoutError)."""
# The SDK logs every request and response line by line at INFO (headers included); at a
# thousand SMS a second that is a tenth of a worker's time. Its warnings still show.
QUIET = logging.getLogger("twilio.http_client.loa")
QUIET.setLevel(logging.WARNING)


@functools.lru_cache(maxsize=1024)
def _quoted(value: str, safe: str = "", encoding: str | None = None,
            errors: str | None = None) -> str:
    """`quote_plus`, remembered: a fan-out's SMS share their body, sender and callback URL,
    and quoting a Vietnamese body character by character was 2 % of a worker's time."""
    return quote_plus(value, safe, encoding, errors)


def _rewrite(url: str, base_url: str | None) -> str:
    if base_url and url.startswith(TWILIO_API):
        return base_url.rstrip("/") + url[len(TWILIO_API):]
    return url


class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The SDK's own synchronous HTTP client, sending to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, _rewrite(url, self.base_url), *args, **kwargs)


class RebasedAsyncHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's own aiohttp client, sending to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      **kwargs: Any) -> Any:
        # The SDK's asynchronous client hands aiohttp the call's timeout only, None unless
        # the caller gave one, and aiohttp takes None as no limit at all: a Twilio that
        # took the connection and never answered held the message (its batch, the
        # worker's stop) for good. The client's own timeout applies, as the synchronous
        # client does it.
        timeout = timeout if timeout is not None else self.timeout
        # The SDK hands `auth` to aiohttp's BasicAuth, which aiohttp 3.14 deprecates;
        # sending the same Authorization header ourselves keeps the request identical.
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if isinstance(data, dict) and headers.get("Content-Type", FORM) == FORM:
            # The form as aiohttp would encode it (same bytes, same Content-Type), without
            # the multipart writer and random boundary it makes for every form it is given.
            data = urlencode(data, doseq=True, quote_via=_quoted).encode()
            headers["Content-Type"] = FORM
        return await super().request(method, _rewrite(url, self.base_url), params=params,
                                     data=data, headers=headers, auth=None, timeout=timeout,
                                     **kwargs)

    def log_request(self, kwargs: dict[str, Any]) -> None:
        # The SDK formats every line before the logger drops it; only when it would show.
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log_response(status_code, response)


def twilio_client(account_sid: str, auth_token: str, base_url: str | None = None,
                  asynchronous: bool = True, timeout_s: float = TIMEOUT_S) -> Client:
    """A twilio `Client`; with `base_url`, every API call goes there instead. A request
    that takes longer than `timeout_s` fails."""
    http = (RebasedAsyncHttpClient(base_url, logger=QUIET, timeout=timeout_s) if asynchronous
            else RebasedHttpClient(base_url, logger=QUIET, timeout=timeout_s))
    return Client(account_sid, auth_token, http_client=http)
