"""The one interface every channel implements, and the errors it may raise.

A channel hands one message to its provider and returns a :class:`Receipt`,
or raises :class:`PermanentDeliveryError` (do not retry) or
:class:`TransientDeliveryError` (retry later). Provider exceptions never leave
the channel module. Retrying, backing off and rate limiting live once, in
``channels.delivery``, not in each channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

from coordinator.errors import LoaError
from coordinator.events import Statement


class DeliveryError(LoaError):
    """A message the provider did not take."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (invalid recipient, opted out, refused content)."""

    def __init__(self, message: str, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """Try again later (rate limited, provider down, network)."""


class Withdrawn(DeliveryError):
    """Nothing was handed over: the message was no longer wanted when its turn came (the
    recipient left while it waited for the rate limit or a connection)."""


async def still_wanted(message: OutboundMessage) -> None:
    """The last check before a channel hands a message over; raises Withdrawn."""
    if message.wanted is not None and not await message.wanted():
        raise Withdrawn(f"{message.id}: withdrawn before it was handed over")


@dataclass(frozen=True)
class OutboundMessage:
    """One message to one recipient; `id` is the delivery id (deterministic, so a retry or a
    replay is recognisable at the provider)."""

    id: str
    recipient: str
    text: str
    subject: str = ""
    html: str | None = None
    language: str = "vi"
    unsubscribe_url: str | None = None
    statement: Statement | None = None
    # asked right before the hand-over (after any wait); False withdraws the message
    wanted: Callable[[], Awaitable[bool]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Receipt:
    """What the provider said when it took a message."""

    delivery_id: str
    provider_id: str
    status: str


class Channel(Protocol):
    """A way out of the building: web, SMS, email."""

    name: ClassVar[str]
    max_length: ClassVar[int | None]

    async def send(self, message: OutboundMessage) -> Receipt:
        """Hand one message to the provider; raises a DeliveryError subclass."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Reconciling(Protocol):
    """A channel that can tell whether an interrupted attempt reached the provider."""

    async def reconcile(self, message: OutboundMessage, since: datetime) -> Receipt | None:
        """The provider's receipt for `message` if it has one, else None."""
        ...
