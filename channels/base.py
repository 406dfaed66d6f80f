"""The one interface every channel implements, and the errors it may raise.

A channel hands a delivery to its provider and returns a :class:`Receipt`,
or raises :class:`PermanentDeliveryError` (do not retry) or
:class:`TransientDeliveryError` (retry later). Provider exceptions never leave
the channel module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from coordinator.errors import LoaError
from coordinator.events import Delivery, Statement


class DeliveryError(LoaError):
    """A delivery the provider did not take."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (invalid recipient, unsubscribed, refused content)."""


class TransientDeliveryError(DeliveryError):
    """Try again later (rate limited, provider down, network)."""


@dataclass(frozen=True)
class Receipt:
    """What the provider said when it took a delivery."""

    delivery_id: str
    provider_id: str
    status: str


class Channel(Protocol):
    """A way out of the building: web, SMS, email."""

    name: ClassVar[str]
    max_length: ClassVar[int | None]

    async def send(self, statement: Statement, delivery: Delivery) -> Receipt:
        """Hand one delivery of a statement to the provider."""
        ...
