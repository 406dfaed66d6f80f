"""Signed tokens for links (approval emails, subscription confirmations): a URL-safe JSON
payload and its HMAC-SHA256. Pure. What a token means, and when it expires, is the
caller's business."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


class BadSignature(ValueError):
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


def unsign(key: bytes, token: str) -> dict[str, Any]:
    """The dict of a token signed with `key`; BadSignature when the MAC does not match,
    ValueError when the payload is not a JSON object."""
    payload, _, mac = token.partition(".")
    if not mac or not hmac.compare_digest(mac.encode(), _mac(key, payload).encode()):
        raise BadSignature("this link is not valid (it was changed or is incomplete)")
    data = json.loads(unb64(payload))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


def derived_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose, so a token of one kind is never valid as another."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
