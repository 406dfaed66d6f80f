"""SMS through Twilio's Messages API, with the official `twilio` SDK.

A :class:`TwilioAccount` says where to send from; its `base_url` points the SDK at the
local Twilio-compatible sandbox (`loa sandbox sms`), by configuration; nothing is patched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import aiohttp
from twilio.base.exceptions import TwilioRestException

from channels.base import (
    BaseChannel,
    ChannelConfigError,
    OutboundMessage,
    PermanentDeliveryError,
    RateLimit,
    Receipt,
    StatusReport,
    TransientDeliveryError,
    still_wanted,
)
from channels.twilio_http import TIMEOUT_S, twilio_client
from channels.twilio_webhooks import as_ours

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


class SmsConfigError(ChannelConfigError):
    """Twilio settings are incomplete."""


@dataclass(frozen=True)
class TwilioAccount:
    """What the SMS channel needs to know of Twilio: the account, the sender (a number or a
    messaging service), where status callbacks go, and optionally another API base URL."""

    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str = ""
    base_url: str | None = None
    timeout_s: float = TIMEOUT_S
    """How long a request to Twilio may take before it fails as transient (a send's retry
    first looks for the message at Twilio, so one Twilio took is not sent again; see
    ``channels.delivery.send_with_retries`` for a look that fails)."""

    @property
    def sender_id(self) -> str:
        """The sender the rate limit is per: the messaging service, else the number."""
        return self.messaging_service_sid or self.from_number or ""


def classify(status: int | None, code: int | None, message: str) -> Exception:
    """A Twilio API error as our error: 429 and 5xx are transient, the rest permanent."""
    if status == 429 or (status is not None and status >= 500):
        # An answer, not silence: Twilio made no message of this request (a 5xx may still
        # have, rarely: a retry looks first).
        return TransientDeliveryError(f"sms: Twilio answered {status} ({code}): {message}",
                                      maybe_taken=status != 429)
    why = PERMANENT_CODES.get(code or 0, message)
    return PermanentDeliveryError(f"sms: {why} (Twilio {code})", code=str(code or status))


class SmsChannel(BaseChannel):
    """Sends SMS; rate limited per sender across all workers by the `limiter` it is given
    (the base waits for it, and refuses a body over Twilio's 1600 characters)."""

    name: ClassVar[str] = "sms"
    max_length: ClassVar[int | None] = 1600  # Twilio's limit for one message body

    def __init__(self, account: TwilioAccount, limiter: RateLimit | None = None) -> None:
        if not account.account_sid or not account.auth_token:
            raise SmsConfigError("LOA_TWILIO_ACCOUNT_SID and LOA_TWILIO_AUTH_TOKEN are needed")
        if not (account.from_number or account.messaging_service_sid):
            raise SmsConfigError("set LOA_TWILIO_FROM_NUMBER or LOA_TWILIO_MESSAGING_SERVICE_SID")
        super().__init__(limiter)
        self.account = account
        self._client: Any = None  # the SDK's aiohttp session needs the running loop: made lazily
        self.sender: dict[str, str] = (
            {"messaging_service_sid": account.messaging_service_sid}
            if account.messaging_service_sid
            else {"from_": account.from_number or ""})
        # where Twilio posts the message's status changes (none asked without a URL)
        self.callback = ({"status_callback": account.status_callback}
                         if account.status_callback else {})

    async def hand_over(self, message: OutboundMessage) -> Receipt:
        """Create the message at Twilio; raises Permanent/TransientDeliveryError."""
        await still_wanted(message)
        try:
            created: Any = await self.client().messages.create_async(
                to=message.recipient, body=message.text, **self.sender, **self.callback)
        except TwilioRestException as exc:
            raise classify(exc.status, exc.code, exc.msg) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(  # no connection at all: the request never left
                f"sms: Twilio not reachable: {exc!r}",
                maybe_taken=not isinstance(exc, aiohttp.ClientConnectorError)) from exc
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
        try:
            earliest = since - timedelta(seconds=5)  # Twilio's clock may run behind ours
        except OverflowError:  # since the beginning of time (no start known)
            earliest = since
        for found in recent:
            created = found.date_created
            if found.body == message.text and (created is None or created >= earliest):
                return Receipt(message.id, provider_id=str(found.sid), status=str(found.status),
                               taken_at=created)
        return None

    async def status_of(self, provider_id: str) -> StatusReport | None:
        """A message's status at Twilio now, with its error code (None: Twilio has no such
        message); for a message whose status callbacks never came. Raises
        Permanent/TransientDeliveryError."""
        try:
            found: Any = await self.client().messages(provider_id).fetch_async()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise classify(exc.status, exc.code, exc.msg) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(f"sms: Twilio not reachable: {exc!r}") from exc
        code = found.error_code
        return StatusReport(as_ours(str(found.status)), "" if code is None else str(code))

    def client(self) -> Any:
        """The twilio SDK client, made in the running event loop on first use."""
        if self._client is None:
            a = self.account
            self._client = twilio_client(a.account_sid, a.auth_token, a.base_url,
                                         timeout_s=a.timeout_s)
        return self._client

    async def close(self) -> None:
        """Close the SDK's HTTP session."""
        await super().close()
        if self._client is not None and hasattr(self._client.http_client, "close"):
            await self._client.http_client.close()
