"""What proves a contact is someone's: a 6-digit code sent by SMS (kept only as an HMAC,
valid for 15 minutes and at most 5 wrong tries) and a signed, expiring email link.

The checks are pure and take the time as an argument; issuing and redeeming a code read
and write Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.signing import BadSignature, derived_key, sign, unsign
from coordinator.state import Pipeline, Redis, transact

CODE_TTL_S = 15 * 60
MAX_TRIES = 5
LINK_TTL = timedelta(days=3)

Purpose = Literal["join", "leave"]
Outcome = Literal["ok", "wrong", "expired", "exhausted", "missing"]


# --- codes (pure) ---------------------------------------------------------------------------

def new_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(10**6):06d}"


def code_mac(secret: str, purpose: str, contact: str, code: str) -> str:
    """What is stored instead of the code: an HMAC bound to the purpose and the phone."""
    message = f"optin-code:{purpose}:{contact}:{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def normalise_code(typed: str) -> str:
    """The digits of what was typed (`123 456`, ` 123456 ` -> `123456`)."""
    return "".join(c for c in typed if not c.isspace())


@dataclass(frozen=True)
class StoredCode:
    """A code as kept in Redis."""

    mac: str
    expires: float  # epoch seconds
    tries: int = 0
    subscriber_id: str = ""

    def to_hash(self) -> dict[str, str]:
        """The Redis hash."""
        return {"mac": self.mac, "expires": repr(self.expires), "tries": str(self.tries),
                "sub": self.subscriber_id}

    @classmethod
    def from_hash(cls, row: dict[str, str]) -> StoredCode | None:
        """From the Redis hash; None for an empty or damaged one."""
        try:
            return cls(row["mac"], float(row["expires"]), int(row.get("tries", "0")),
                       row.get("sub", ""))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class CodeCheck:
    """The outcome of one try, and how many wrong tries remain after it."""

    outcome: Outcome
    tries_left: int


def check_code(stored: StoredCode | None, secret: str | Sequence[str], purpose: str,
               contact: str, typed: str, now: float) -> CodeCheck:
    """Is `typed` the stored code, still valid? `secret` may be the current link secret and
    the previous ones (a code issued just before a rotation still counts). A wrong try uses
    one of MAX_TRIES. Pure."""
    if stored is None:
        return CodeCheck("missing", 0)
    if now >= stored.expires:
        return CodeCheck("expired", 0)
    if stored.tries >= MAX_TRIES:
        return CodeCheck("exhausted", 0)
    expected = stored.mac.encode()
    keys = [secret] if isinstance(secret, str) else list(secret)
    if any([hmac.compare_digest(code_mac(key, purpose, contact, normalise_code(typed)).encode(),
                                expected) for key in keys]):
        return CodeCheck("ok", MAX_TRIES - stored.tries)
    left = MAX_TRIES - stored.tries - 1
    return CodeCheck("wrong" if left > 0 else "exhausted", left)


# --- email confirmation links (pure) --------------------------------------------------------

class InvalidConfirmLink(LoaError):
    """A confirmation link that is forged, garbled or expired; the message says which."""


@dataclass(frozen=True)
class ConfirmClaims:
    """What a confirmation link says: this subscriber's email, for the request `nonce`."""

    subscriber_id: str
    email: str
    nonce: str
    expires: datetime


def sign_confirm(secret: str, claims: ConfirmClaims) -> str:
    """The URL-safe token of a confirmation link."""
    return sign(derived_key(secret, "loa-optin-confirm"), {
        "s": claims.subscriber_id, "m": claims.email, "n": claims.nonce,
        "e": claims.expires.isoformat()})


def verify_confirm(secret: str | Sequence[str], token: str, now: datetime) -> ConfirmClaims:
    """The claims of a valid, unexpired token signed with `secret` (or one of the current and
    previous link secrets); raises InvalidConfirmLink. Pure."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    try:
        data = unsign([derived_key(k, "loa-optin-confirm") for k in keys], token)
        claims = ConfirmClaims(str(data["s"]), str(data["m"]), str(data["n"]),
                               datetime.fromisoformat(data["e"]))
    except BadSignature as exc:
        raise InvalidConfirmLink(str(exc)) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidConfirmLink("this link is not valid (garbled)") from exc
    if now >= claims.expires:
        raise InvalidConfirmLink("this link has expired; please subscribe again")
    return claims


async def issue_code(redis: Redis, keys: Keys, secret: str, purpose: Purpose, phone: str,
                     sub_id: str, now: float) -> str:
    """A fresh code for this phone and purpose (replacing any earlier one); returns it to
    send, keeps only its HMAC."""
    code = new_code()
    stored = StoredCode(code_mac(secret, purpose, phone, code), now + CODE_TTL_S, 0, sub_id)
    key = keys.optin_code(purpose, phone)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=stored.to_hash())
        pipe.expire(key, CODE_TTL_S)
        await pipe.execute()
    return code


async def redeem_code(redis: Redis, keys: Keys, secret: str | Sequence[str], purpose: Purpose,
                      phone: str, typed: str, now: float) -> tuple[CodeCheck, str]:
    """Try a code: (the outcome, the subscriber id it was issued for). A wrong try is
    counted; the right one, an expired one or the last wrong one ends the code."""
    key = keys.optin_code(purpose, phone)

    async def body(pipe: Pipeline) -> tuple[CodeCheck, str]:
        stored = StoredCode.from_hash(await pipe.hgetall(key))
        check = check_code(stored, secret, purpose, phone, typed, now)
        pipe.multi()
        if check.outcome == "wrong":
            pipe.hincrby(key, "tries", 1)
        elif check.outcome != "missing":
            pipe.delete(key)
        return check, stored.subscriber_id if stored else ""

    return await transact(redis, [key], body)
