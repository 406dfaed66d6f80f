"""The one interface every channel implements, the message it takes, and its errors.

A channel hands one message to its provider and returns a :class:`Receipt`,
or raises :class:`PermanentDeliveryError` (do not retry) or
:class:`TransientDeliveryError` (retry later). Provider exceptions never leave
the channel module. Retrying and backing off live once, in ``channels.delivery``.
What a channel declares it cannot do is enforced once, by :class:`BaseChannel`: a text
longer than its `max_length` is refused (:class:`MessageTooLong`) and its rate limit, a
:class:`RateLimit` it is given, is waited for, before its own hand-over runs.

This package is a leaf: it knows nothing of the coordinator. Its errors have their own
root, :class:`ChannelError`, which the coordinator translates where it calls a channel::

    ChannelError
    ├── DeliveryError             a message the provider did not take
    │   ├── PermanentDeliveryError
    │   │   └── MessageTooLong
    │   ├── TransientDeliveryError
    │   └── Withdrawn
    └── ChannelConfigError        a channel cannot be built from what it was given
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable


class ChannelError(Exception):
    """Root of every error a channel raises on purpose."""


class ChannelConfigError(ChannelError, ValueError):
    """A channel's configuration is incomplete or inconsistent."""


class DeliveryError(ChannelError):
    """A message the provider did not take."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (invalid recipient, opted out, refused content)."""

    def __init__(self, message: str, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class MessageTooLong(PermanentDeliveryError):
    """A text longer than the channel takes (refused before the provider is asked)."""


class TransientDeliveryError(DeliveryError):
    """Try again later (rate limited, provider down, network). `maybe_taken`: the provider
    may have the message all the same (no answer came: a timeout, a connection cut after
    the request went out), so a retry first asks it; False when it answered with an error,
    or the request never left."""

    def __init__(self, message: str, maybe_taken: bool = True) -> None:
        self.maybe_taken = maybe_taken
        super().__init__(message)


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
    language: str = ""  # BCP 47; "" when not known
    unsubscribe_url: str | None = None
    # asked right before the hand-over (after any wait); False withdraws the message
    wanted: Callable[[], Awaitable[bool]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Receipt:
    """What the provider said when it took a message."""

    delivery_id: str
    provider_id: str
    status: str
    taken_at: datetime | None = None
    """When the provider took it, where that is known and not now (a message found by
    ``Reconciling.reconcile``)."""


@dataclass(frozen=True)
class StatusReport:
    """A message's status at the provider when asked, with its error code ("" for none)."""

    status: str
    error_code: str


class RateLimit(Protocol):
    """A rate shared by every process sending through the same account (a token bucket the
    coordinator keeps, e.g. in Redis)."""

    async def acquire(self) -> None:
        """Wait until one more message may go. (A limiter may also offer `give_back()`: a
        turn not used, for the next message to take.)"""
        ...


class Channel(Protocol):
    """A way out of the building: SMS, email."""

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


@runtime_checkable
class Tracking(Protocol):
    """A channel whose provider can be asked how a message it took has fared since (its
    status callbacks may never come)."""

    async def status_of(self, provider_id: str) -> StatusReport | None:
        """The message's status now; None when the provider has no such message."""
        ...


def refusal_for_length(channel_name: str, max_length: int | None, message: OutboundMessage
                       ) -> MessageTooLong | None:
    """The error for a text longer than `max_length` characters (None: no limit, or it
    fits). Pure."""
    if max_length is None or len(message.text) <= max_length:
        return None
    return MessageTooLong(f"{channel_name}: {message.id}: the text has {len(message.text)} "
                          f"characters, more than the {max_length} this channel takes",
                          code="too-long")


class BaseChannel:
    """What every channel does the same way before its provider is asked: refuse a text
    longer than `max_length`, then wait for the rate limit (if it was given one). A channel
    subclasses it and implements :meth:`hand_over` (and :meth:`close`)."""

    name: ClassVar[str]
    max_length: ClassVar[int | None] = None

    def __init__(self, limiter: RateLimit | None = None) -> None:
        self.limiter = limiter

    async def send(self, message: OutboundMessage) -> Receipt:
        """Check the message against the channel's capabilities, take a turn of the rate
        limit, then hand it over; raises a DeliveryError subclass."""
        too_long = refusal_for_length(self.name, self.max_length, message)
        if too_long is not None:
            raise too_long
        if self.limiter is not None:
            await self.limiter.acquire()
        try:
            return await self.hand_over(message)
        except Withdrawn:
            # Its turn went unused: the next message in line takes it at once. Withdrawn
            # (a statement sent in error, STOP, a decided approval), the rest of a batch
            # waiting in line would otherwise hold the rate for minutes, each skip taking
            # a turn, ahead of the correction that follows.
            give_back = getattr(self.limiter, "give_back", None)
            if give_back is not None:
                give_back()
            raise

    async def hand_over(self, message: OutboundMessage) -> Receipt:
        """Give one message to the provider (after :func:`still_wanted`); raises a
        DeliveryError subclass."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections, and the rate limit's own work if it has any (a subclass
        calls this from its own `close`)."""
        close_limiter = getattr(self.limiter, "close", None)
        if close_limiter is not None:
            await close_limiter()
