"""The second factor of console logins: TOTP (RFC 6238: 6 digits, 30 s steps) with pyotp.

Pure: the time comes in as an argument. A secret is kept in Redis sealed with AES-GCM
under a key derived from LOA_SECRET_KEY and bound to the username, so that a copy of
Redis (a backup, its append-only file) gives nobody the codes, and a sealed secret moved
to another account does not open there. Changing LOA_SECRET_KEY therefore means
enrolling every account again (`loa accounts totp NAME`).
"""

from __future__ import annotations

import hmac
import os
import re

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coordinator.errors import LoaError
from coordinator.signing import b64, unb64

ISSUER = "Loa"
KEY_PURPOSE = "totp-secret"  # Settings.key_for(KEY_PURPOSE) seals the secrets
STEP_S = 30
# A phone's clock a little off, or a code typed as it changed: the step before and after.
DRIFT_STEPS = 1
_CODE = re.compile(r"^\d{6}$")
_SEALED_VERSION = "v1"


class SealError(LoaError):
    """A sealed secret that does not open with this key: changed in Redis, moved from
    another account, or sealed under another LOA_SECRET_KEY."""


def new_secret() -> str:
    """A fresh random TOTP secret (base32, 160 bits)."""
    return pyotp.random_base32()


def enrolment_uri(secret: str, username: str) -> str:
    """The `otpauth://totp/...` URI an authenticator app takes (typed in or as a QR code)."""
    return pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=username,
                                                                issuer_name=ISSUER)


def seal(key: bytes, username: str, secret: str) -> str:
    """The secret encrypted and authenticated for this account (a fresh nonce each time)."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), username.encode())
    return f"{_SEALED_VERSION}.{b64(nonce + sealed)}"


def unseal(key: bytes, username: str, sealed: str) -> str:
    """The secret sealed for this account; SealError when it does not open."""
    version, _, body = sealed.partition(".")
    try:
        raw = unb64(body)
        if version != _SEALED_VERSION or len(raw) < 12 + 16:
            raise SealError("not a sealed TOTP secret")
        return AESGCM(key).decrypt(raw[:12], raw[12:], username.encode()).decode()
    # SealError too: the short or unversioned secret above gets the same message
    except (InvalidTag, ValueError, SealError) as exc:
        raise SealError(f"the TOTP secret of {username} does not open with this "
                        "LOA_SECRET_KEY; enrol again with `loa accounts totp`") from exc


def step_at(now: float) -> int:
    """The TOTP time step (counter) at `now` (epoch seconds)."""
    return int(now // STEP_S)


def code_at(secret: str, step: int) -> str:
    """The 6-digit code of a time step."""
    return pyotp.TOTP(secret, interval=STEP_S).generate_otp(step)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code `code` is, within DRIFT_STEPS of `now`; None for a wrong or
    malformed code. Spaces inside the code are ignored (apps show `123 456`)."""
    typed = code.replace(" ", "").strip()
    if not _CODE.match(typed):
        return None
    current = step_at(now)
    # the step, not just yes or no: the caller remembers it, so that this code (and any
    # older one) is refused from then on
    for step in (current, current - DRIFT_STEPS, current + DRIFT_STEPS):
        if step >= 0 and hmac.compare_digest(code_at(secret, step), typed):
            return step
    return None
