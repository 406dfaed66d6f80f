"""SMS through Twilio's Messages API, with the official `twilio` SDK.

`LOA_TWILIO_BASE_URL` points the SDK at the local Twilio-compatible sandbox
(`loa sandbox sms`), by configuration; nothing is patched.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import aiohttp
from twilio.base.exceptions import TwilioRestException

from channels.base import (
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
    still_wanted,
)
from channels.delivery import RateLimiter
from channels.twilio_http import twilio_client
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis

# Twilio error codes that retrying cannot fix.
PERMANENT_CODES = {
    21211: "invalid 'To' number",
    21408: "region not enabled",
    21610: "recipient unsubscribed (replied STOP)",
    21612: "cannot route to this number",
    21614: "'To' is not a mobile number",
    30003: "unreachable handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered as spam by the carrier",
}


class SmsConfigError(ValueError):
    """Twilio settings are incomplete."""


def classify(status: int | None, code: int | None, message: str) -> Exception:
    """A Twilio API error as our error: 429 and 5xx are transient, the rest permanent."""
    if status == 429 or (status is not None and status >= 500):
        return TransientDeliveryError(f"sms: Twilio answered {status} ({code}): {message}")
    why = PERMANENT_CODES.get(code or 0, message)
    return PermanentDeliveryError(f"sms: {why} (Twilio {code})", code=str(code or status))


class SmsChannel:
    """Sends SMS; rate limited per sender across all workers."""

    name: ClassVar[str] = "sms"
    max_length: ClassVar[int | None] = 1600  # Twilio's limit for one message body

    def __init__(self, settings: Settings, redis: Redis, keys: Keys) -> None:
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            raise SmsConfigError("LOA_TWILIO_ACCOUNT_SID and LOA_TWILIO_AUTH_TOKEN are needed")
        if not (settings.twilio_from_number or settings.twilio_messaging_service_sid):
            raise SmsConfigError("set LOA_TWILIO_FROM_NUMBER or LOA_TWILIO_MESSAGING_SERVICE_SID")
        self.settings = settings
        self._client: Any = None  # the SDK's aiohttp session needs the running loop: made lazily
        self.sender: dict[str, str] = (
            {"messaging_service_sid": settings.twilio_messaging_service_sid}
            if settings.twilio_messaging_service_sid
            else {"from_": settings.twilio_from_number or ""})
        self.status_callback = f"{settings.web_url()}/hooks/twilio/status"
        sender_id = settings.twilio_messaging_service_sid or settings.twilio_from_number or ""
        self.limiter = RateLimiter(redis, keys.rate_bucket("sms", sender_id),
                                   settings.sms_rate_per_s)

    async def send(self, message: OutboundMessage) -> Receipt:
        """Create the message at Twilio; raises Permanent/TransientDeliveryError."""
        await self.limiter.acquire()
        await still_wanted(message)
        try:
            created: Any = await self.client().messages.create_async(
                to=message.recipient, body=message.text, status_callback=self.status_callback,
                **self.sender)
        except TwilioRestException as exc:
            raise classify(exc.status, exc.code, exc.msg) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(f"sms: Twilio not reachable: {exc!r}") from exc
        return Receipt(message.id, provider_id=str(created.sid), status=str(created.status))

    async def reconcile(self, message: OutboundMessage, since: datetime) -> Receipt | None:
        """Did an attempt interrupted by a crash reach Twilio after all? Looks for a message
        to the same number with the same body created since the attempt began."""
        try:
            recent: list[Any] = await self.client().messages.list_async(to=message.recipient,
                                                                        limit=50)
        except TwilioRestException as exc:
            raise classify(exc.status, exc.code, exc.msg) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(f"sms: Twilio not reachable: {exc!r}") from exc
        for found in recent:
            created = found.date_created
            if found.body == message.text and (created is None
                                               or created >= since - timedelta(seconds=5)):
                return Receipt(message.id, provider_id=str(found.sid), status=str(found.status))
        return None

    def client(self) -> Any:
        """The twilio SDK client, made in the running event loop on first use."""
        if self._client is None:
            s = self.settings
            assert s.twilio_account_sid and s.twilio_auth_token is not None
            self._client = twilio_client(s.twilio_account_sid,
                                         s.twilio_auth_token.get_secret_value(),
                                         s.twilio_base_url)
        return self._client

    async def close(self) -> None:
        """Close the SDK's HTTP session."""
        if self._client is not None and hasattr(self._client.http_client, "close"):
            await self._client.http_client.close()
