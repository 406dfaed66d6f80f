"""Signed tokens for links (approval emails, subscription confirmations): a URL-safe JSON
payload and its HMAC-SHA256. Pure. What a token means, and when it expires, is the
caller's business.

Keys rotate: a token is signed with the current key and verifies with the current key or
any previous one still in its grace period (:func:`verifying_secrets`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from coordinator.errors import LoaError


class BadSignature(LoaError):
    """The token was changed, is incomplete, or is not ours."""


def b64(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """The inverse of :func:`b64`."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(key: bytes, data: dict[str, Any]) -> str:
    """`payload.mac` for a JSON-able dict."""
    payload = b64(json.dumps(data, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}"


def unsign(keys: bytes | Sequence[bytes], token: str) -> dict[str, Any]:
    """The dict of a token signed with `keys` (one key, or the current and the previous
    ones); BadSignature when no key's MAC matches, ValueError when the payload is not a
    JSON object."""
    payload, _, mac = token.partition(".")
    candidates = [keys] if isinstance(keys, bytes) else list(keys)
    # Every key is tried (no early exit), so the time taken says nothing about which matched.
    matched = [hmac.compare_digest(mac.encode(), _mac(key, payload).encode())
               for key in candidates]
    if not mac or not any(matched):
        raise BadSignature("this link is not valid (it was changed or is incomplete)")
    data = json.loads(unb64(payload))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


def derived_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose, so a token of one kind is never valid as another."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def verifying_secrets(current: str | None, previous: Sequence[str], rotated_at: datetime | None,
                      grace: timedelta, now: datetime) -> list[str]:
    """The secrets a token may be signed with, current first: the previous ones only until
    `rotated_at + grace` (for ever when `rotated_at` is unknown: the operator removes them).
    Empty without a current secret. Pure."""
    if current is None:
        return []
    in_grace = rotated_at is None or now < rotated_at + grace
    return [current, *(p for p in previous if in_grace and p != current)]
