"""Session cookies whose key can rotate: Starlette's SessionMiddleware signs with the current
key and, until the grace period of a rotation ends, still accepts cookies signed with a
previous one (so rotating the key logs nobody out at once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import itsdangerous
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator.events import utcnow
from coordinator.settings import Settings

PREFIX = "session:"  # a session key is never the very key that signs links


class RotatingSessionMiddleware(SessionMiddleware):
    """Sessions signed with `secret_key`; `previous_keys` still verify until
    `previous_until` (for ever when it is None)."""

    def __init__(self, app: ASGIApp, /, secret_key: str, previous_keys: Sequence[str] = (),
                 previous_until: datetime | None = None,
                 clock: Callable[[], datetime] = utcnow, **options: Any) -> None:
        super().__init__(app, secret_key, **options)
        self._current = secret_key
        self._until = previous_until
        self._clock = clock
        if previous_keys:  # itsdangerous signs with the last key and verifies with each
            self.signer = itsdangerous.TimestampSigner([*reversed(previous_keys), secret_key])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Drop the previous keys once their grace period is over, then do as Starlette does."""
        if (self._until is not None and len(self.signer.secret_keys) > 1
                and self._clock() >= self._until):
            self.signer = itsdangerous.TimestampSigner(self._current)
        await super().__call__(scope, receive, send)


def previous_session_keys(settings: Settings) -> list[str]:
    """The keys of earlier session secrets (or of earlier link secrets while sessions fall
    back to the link secret), newest first."""
    previous = list(settings.session_secrets_previous)
    if settings.session_secret is None:
        previous += settings.link_secrets_previous
    return [PREFIX + s.get_secret_value() for s in previous]


def rotation_ends(settings: Settings) -> datetime | None:
    """When previous session keys stop counting; None when no rotation time is set."""
    if settings.keys_rotated_at is None:
        return None
    return settings.keys_rotated_at + timedelta(seconds=settings.key_rotation_grace_s)
