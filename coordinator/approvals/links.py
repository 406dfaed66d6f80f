"""Signed links in approval emails: they name one request and one person, expire at the
request's deadline, and work once (the single use is enforced where they are redeemed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime


class InvalidLink(ValueError):
    """A link that is forged, garbled or expired; the message says which, in plain words."""


@dataclass(frozen=True)
class LinkClaims:
    """What a valid link says."""

    approval_id: str
    person_id: str
    nonce: str
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_link(secret: str, claims: LinkClaims) -> str:
    """The token for a link (URL-safe)."""
    payload = _b64(json.dumps({"a": claims.approval_id, "p": claims.person_id,
                               "n": claims.nonce, "e": claims.expires.isoformat()},
                              separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify_link(secret: str, token: str, now: datetime) -> LinkClaims:
    """The claims of a valid, unexpired token; raises InvalidLink. Pure."""
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac.encode(), expected.encode()):
        raise InvalidLink("this link is not valid (it was changed or is incomplete)")
    try:
        data = json.loads(_unb64(payload))
        claims = LinkClaims(data["a"], data["p"], data["n"], datetime.fromisoformat(data["e"]))
    except (ValueError, KeyError) as exc:
        raise InvalidLink("this link is not valid (garbled)") from exc
    if now >= claims.expires:
        raise InvalidLink(f"this link expired at {claims.expires.isoformat()}")
    return claims
