"""A provider's message id (a Twilio SID) and the delivery it belongs to, kept only as long
as callbacks can still come (:data:`PROVIDER_IDS_KEPT_S`), as are the statuses of callbacks
that arrived before we had recorded that id (``dispatch.status_callbacks``).

A provider calls back within minutes, retries for hours at most; a week is long past that,
so nothing a callback needs is gone when it comes, and neither key grows for ever."""

from __future__ import annotations

from coordinator.keys import Keys
from coordinator.state import Pipeline

PROVIDER_IDS_KEPT_S = 7 * 24 * 3600
"""How long a provider id stays resolvable, and an early callback waits to be taken."""
CALLED_BACK = frozenset({"sms"})
"""The channels whose provider calls back with statuses (Twilio): only their ids are kept.
An email's id is its Message-ID, which nothing looks up."""


def callback_id(channel: str, provider_id: str | None) -> str:
    """The provider id a status callback may name this delivery by; '' when none will."""
    return (provider_id or "") if channel in CALLED_BACK else ""


def queue_provider_ids(pipe: Pipeline, keys: Keys, pairs: dict[str, str]) -> None:
    """Inside MULTI, with the deliveries' records: which delivery each provider id is
    (provider id -> delivery id), kept :data:`PROVIDER_IDS_KEPT_S`, so a status callback
    that finds the delivery finds its record written too (the callbacks that came before
    are taken in the same transaction: ``status_callbacks.queue_take_early``)."""
    for provider_id, delivery_id in pairs.items():
        pipe.set(keys.provider_message(provider_id), delivery_id, ex=PROVIDER_IDS_KEPT_S)
