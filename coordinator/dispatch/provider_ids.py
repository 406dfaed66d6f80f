"""A provider's message id (a Twilio SID) and the delivery it belongs to, and the status
callbacks that arrived before we had recorded that id: both kept only as long as callbacks
can still come (:data:`PROVIDER_IDS_KEPT_S`).

A provider calls back within minutes, retries for hours at most; a week is long past that,
so nothing a callback needs is gone when it comes, and neither key grows for ever."""

from __future__ import annotations

from coordinator.keys import Keys
from coordinator.state import Pipeline

PROVIDER_IDS_KEPT_S = 7 * 24 * 3600
"""How long a provider id stays resolvable, and an early callback waits to be taken."""


def queue_early_callback(pipe: Pipeline, keys: Keys, provider_id: str, status: str) -> None:
    """Keep the status of a callback for a provider id not recorded yet, until the send is
    recorded (:func:`queue_provider_ids` takes it) or :data:`PROVIDER_IDS_KEPT_S` after
    the latest early callback (the hash's expiry is renewed by each one). In a pipeline."""
    pipe.hset(keys.early_callbacks(), provider_id, status)
    pipe.expire(keys.early_callbacks(), PROVIDER_IDS_KEPT_S)


def queue_provider_ids(pipe: Pipeline, keys: Keys, pairs: dict[str, str]) -> int:
    """Inside MULTI, with the deliveries' records: record which delivery each provider id
    is (provider id -> delivery id, kept :data:`PROVIDER_IDS_KEPT_S`) and take the statuses
    of the callbacks that came before, so a callback that finds the delivery finds its
    record written too. Queues nothing for no pairs; else its replies are the transaction's
    last, read by :func:`early_statuses`. Returns how many commands it queued."""
    if not pairs:
        return 0
    ids = list(pairs)
    for provider_id, delivery_id in pairs.items():
        pipe.set(keys.provider_message(provider_id), delivery_id, ex=PROVIDER_IDS_KEPT_S)
    pipe.hmget(keys.early_callbacks(), ids)
    pipe.hdel(keys.early_callbacks(), *ids)
    return len(ids) + 2


def early_statuses(pairs: dict[str, str], replies: list[object]) -> dict[str, str]:
    """The statuses of the callbacks that came before :func:`queue_provider_ids` (taken),
    by delivery id, from the transaction's replies. Pure."""
    if not pairs:
        return {}
    early = replies[-2]
    assert isinstance(early, list)
    return {pairs[pid]: str(status) for pid, status in zip(pairs, early, strict=True)
            if status}
