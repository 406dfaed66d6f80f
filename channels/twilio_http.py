"""Point the official twilio SDK at another base URL (our local Twilio-compatible endpoint),
by configuration and without patching: HTTP clients that rewrite the API host."""

from __future__ import annotations

from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_API = "https://api.twilio.com"


def _rewrite(url: str, base_url: str | None) -> str:
    if base_url and url.startswith(TWILIO_API):
        return base_url.rstrip("/") + url[len(TWILIO_API):]
    return url


class RebasedHttpClient(TwilioHttpClient):
    """The SDK's own synchronous HTTP client, sending to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return super().request(method, _rewrite(url, self.base_url), *args, **kwargs)


class RebasedAsyncHttpClient(AsyncTwilioHttpClient):
    """The SDK's own aiohttp client, sending to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return await super().request(method, _rewrite(url, self.base_url), *args, **kwargs)


def twilio_client(account_sid: str, auth_token: str, base_url: str | None = None,
                  asynchronous: bool = True) -> Client:
    """A twilio `Client`; with `base_url`, every API call goes there instead."""
    http = (RebasedAsyncHttpClient(base_url) if asynchronous else RebasedHttpClient(base_url))
    return Client(account_sid, auth_token, http_client=http)
