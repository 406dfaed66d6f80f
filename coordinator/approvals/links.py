"""Signed links in approval emails: they name one request and one person, expire at the
request's deadline, and work once (`claim_link`, when they are redeemed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.signing import BadSignature, sign, unsign
from coordinator.state import Redis


class InvalidLink(LoaError):
    """A link that is forged, garbled or expired; the message says which, in plain words."""


@dataclass(frozen=True)
class LinkClaims:
    """What a valid link says."""

    approval_id: str
    person_id: str
    nonce: str
    expires: datetime


def sign_link(secret: str, claims: LinkClaims) -> str:
    """The token for a link (URL-safe)."""
    return sign(secret.encode(), {"a": claims.approval_id, "p": claims.person_id,
                                  "n": claims.nonce, "e": claims.expires.isoformat()})


def verify_link(secrets: str | Sequence[str], token: str, now: datetime) -> LinkClaims:
    """The claims of a valid, unexpired token signed with one of `secrets` (the current link
    secret, then previous ones still in their grace period: `Settings.link_secrets(now)`);
    raises InvalidLink. Pure."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    try:
        data = unsign([k.encode() for k in keys], token)
    except BadSignature as exc:
        raise InvalidLink(str(exc)) from exc
    except ValueError as exc:
        raise InvalidLink("this link is not valid (garbled)") from exc
    try:
        claims = LinkClaims(data["a"], data["p"], data["n"], datetime.fromisoformat(data["e"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidLink("this link is not valid (garbled)") from exc
    if now >= claims.expires:
        raise InvalidLink(f"this link expired at {claims.expires.isoformat()}")
    return claims


# --- Redis: each link works once ------------------------------------------------------------

async def link_spent(redis: Redis, keys: Keys, nonce: str) -> bool:
    """Whether the link with this nonce was already used."""
    return bool(await redis.exists(keys.link_used(nonce)))


async def claim_link(redis: Redis, keys: Keys, nonce: str) -> bool:
    """Spend the link with this nonce; False when it was already spent (atomic: of two
    concurrent uses, one wins)."""
    return bool(await redis.set(keys.link_used(nonce), "1", nx=True))


async def release_link(redis: Redis, keys: Keys, nonce: str) -> None:
    """Give back a link claimed for a decision that could not be sent."""
    await redis.delete(keys.link_used(nonce))
