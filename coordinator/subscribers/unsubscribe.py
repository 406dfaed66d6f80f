"""One-click unsubscribe tokens (RFC 8058): a subscriber id and its HMAC. Pure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def unsubscribe_token(secret: str, subscriber_id: str) -> str:
    """The token in a subscriber's List-Unsubscribe link."""
    mac = hmac.new(secret.encode(), f"unsub:{subscriber_id}".encode(), hashlib.sha256)
    return f"{subscriber_id}.{mac.hexdigest()[:32]}"


def subscriber_of(secret: str | Sequence[str], token: str) -> str | None:
    """The subscriber id of a valid token (made with `secret`, or with one of the current
    and previous link secrets), None for a forged one."""
    subscriber_id, _, _ = token.partition(".")
    keys = [secret] if isinstance(secret, str) else list(secret)
    valid = [hmac.compare_digest(token.encode(), unsubscribe_token(k, subscriber_id).encode())
             for k in keys]
    return subscriber_id if any(valid) else None
