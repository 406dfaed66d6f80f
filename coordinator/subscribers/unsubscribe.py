"""One-click unsubscribe tokens (RFC 8058): a subscriber id and its HMAC. Pure."""

from __future__ import annotations

import hashlib
import hmac


def unsubscribe_token(secret: str, subscriber_id: str) -> str:
    """The token in a subscriber's List-Unsubscribe link."""
    mac = hmac.new(secret.encode(), f"unsub:{subscriber_id}".encode(), hashlib.sha256)
    return f"{subscriber_id}.{mac.hexdigest()[:32]}"


def subscriber_of(secret: str, token: str) -> str | None:
    """The subscriber id of a valid token, None for a forged one."""
    subscriber_id, _, _ = token.partition(".")
    expected = unsubscribe_token(secret, subscriber_id)
    return subscriber_id if hmac.compare_digest(token.encode(), expected.encode()) else None
