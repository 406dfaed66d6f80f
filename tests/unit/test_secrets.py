"""Secrets: what `loa up` keeps in its data folder, and key rotation for links, codes and
session cookies (old keys verify during the grace period only)."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import itsdangerous
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from coordinator.approvals.links import InvalidLink, LinkClaims, sign_link, verify_link
from coordinator.errors import ConfigError
from coordinator.kept_secrets import kept_secrets, read_kept, rotate_kept_secrets
from coordinator.settings import Settings
from coordinator.signing import verifying_secrets
from coordinator.subscribers.proofs import (
    ConfirmClaims,
    InvalidConfirmLink,
    StoredCode,
    check_code,
    code_mac,
    sign_confirm,
    verify_confirm,
)
from coordinator.subscribers.unsubscribe import subscriber_of, unsubscribe_token
from coordinator.web.sessions import (
    RotatingSessionMiddleware,
    previous_session_keys,
    rotation_ends,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
CLAIMS = LinkClaims("APR-00001-1", "nguyen-van-an", "n1", T0 + timedelta(hours=1))
# sign_link("old-link-secret", CLAIMS); the MAC checked with
# `openssl dgst -sha256 -hmac old-link-secret -binary | base64` (URL-safe, unpadded)
OLD_TOKEN = ("eyJhIjoiQVBSLTAwMDAxLTEiLCJwIjoibmd1eWVuLXZhbi1hbiIsIm4iOiJuMSIsImUiOiIyMDI2LTEx"
             "LTIyVDA5OjAwOjAwKzAwOjAwIn0.0KFVJB8JMpQcnVtx9MMGiSLmaNfG5M96BeXw6ORcYPc")
WEEK = timedelta(days=7)


# --- kept secrets ---------------------------------------------------------------------------

def test_loa_up_makes_its_secrets_once_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    """The first call makes the link, session and secret keys, in a file created 0600; the
    next call hands back the very same ones."""
    path = tmp_path / "data" / "secrets.json"
    first = kept_secrets(path, {})
    assert sorted(first) == ["LOA_LINK_SECRET", "LOA_SECRET_KEY", "LOA_SESSION_SECRET"]
    assert all(len(v) == 43 for v in first.values())  # 32 random bytes, URL-safe base64
    assert len(set(first.values())) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_secrets(path, {}) == first
    assert json.loads(path.read_text()) == first


def test_the_file_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """With umask 000 the file is still created 0600 (not chmod-ed after writing)."""
    before = os.umask(0)
    try:
        kept_secrets(tmp_path / "secrets.json", {})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600


def test_a_secret_set_in_the_environment_wins_and_is_not_written(tmp_path: Path) -> None:
    """LOA_LINK_SECRET from the environment is neither handed on nor kept in the file."""
    path = tmp_path / "secrets.json"
    handed = kept_secrets(path, {"LOA_LINK_SECRET": "from-env"})
    assert sorted(handed) == ["LOA_SECRET_KEY", "LOA_SESSION_SECRET"]
    assert "LOA_LINK_SECRET" not in read_kept(path)


def test_a_secrets_file_others_may_read_is_refused(tmp_path: Path) -> None:
    """A file readable by the group or others is an error naming the fix."""
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        kept_secrets(path, {})


def test_rotating_kept_secrets_keeps_the_old_ones_as_previous(tmp_path: Path) -> None:
    """After a rotation the old link and session secrets are handed on as previous ones,
    with the rotation time; the secret key stays."""
    path = tmp_path / "secrets.json"
    first = kept_secrets(path, {})
    rotate_kept_secrets(path, T0)
    after = kept_secrets(path, {})
    assert after["LOA_SECRET_KEY"] == first["LOA_SECRET_KEY"]
    assert after["LOA_LINK_SECRET"] != first["LOA_LINK_SECRET"]
    assert after["LOA_LINK_SECRETS_PREVIOUS"] == first["LOA_LINK_SECRET"]
    assert after["LOA_SESSION_SECRETS_PREVIOUS"] == first["LOA_SESSION_SECRET"]
    assert after["LOA_KEYS_ROTATED_AT"] == "2026-11-22T08:00:00+00:00"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- rotation of link keys ------------------------------------------------------------------

def test_previous_secrets_verify_until_the_grace_period_ends() -> None:
    """Current first; previous ones until rotated_at + grace; for ever without a time."""
    assert verifying_secrets("new", ["old"], T0, WEEK, T0) == ["new", "old"]
    assert verifying_secrets("new", ["old"], T0, WEEK, T0 + WEEK - timedelta(seconds=1)) == [
        "new", "old"]
    assert verifying_secrets("new", ["old"], T0, WEEK, T0 + WEEK) == ["new"]
    assert verifying_secrets("new", ["old"], None, WEEK, T0 + 100 * WEEK) == ["new", "old"]
    assert verifying_secrets(None, ["old"], None, WEEK, T0) == []


def test_settings_read_previous_link_secrets_from_a_comma_separated_list() -> None:
    """LOA_LINK_SECRETS_PREVIOUS="a, b" with a rotation time gives the secrets to verify."""
    settings = Settings(link_secret="new", link_secrets_previous="old-1, old-2",
                        keys_rotated_at="2026-11-22T08:00:00+00:00",
                        key_rotation_grace_s=3600)  # type: ignore[arg-type]
    assert settings.link_secrets(T0) == ["new", "old-1", "old-2"]
    assert settings.link_secrets(T0 + timedelta(hours=1)) == ["new"]


def test_a_link_signed_with_the_old_key_verifies_after_rotation() -> None:
    """The token made with the old secret is still accepted next to the new one."""
    assert sign_link("old-link-secret", CLAIMS) == OLD_TOKEN
    assert verify_link(["new-link-secret", "old-link-secret"], OLD_TOKEN, T0) == CLAIMS
    assert verify_link("old-link-secret", OLD_TOKEN, T0) == CLAIMS


def test_a_link_signed_with_an_unknown_key_does_not_verify() -> None:
    """Neither the new key alone nor any other key accepts the old token."""
    for secrets in (["new-link-secret"], ["new-link-secret", "another"], []):
        with pytest.raises(InvalidLink, match="not valid"):
            verify_link(secrets, OLD_TOKEN, T0)


def test_confirmation_links_codes_and_unsubscribe_links_survive_a_rotation() -> None:
    """Each kind of subscriber proof made with the old secret verifies with [new, old] and
    not with [new] alone."""
    claims = ConfirmClaims("sub-0123456789abcdef", "dan@mail.example", "n", T0 + WEEK)
    confirm = sign_confirm("old", claims)
    assert verify_confirm(["new", "old"], confirm, T0) == claims
    with pytest.raises(InvalidConfirmLink):
        verify_confirm(["new"], confirm, T0)
    stored = StoredCode(code_mac("old", "join", "+84911222333", "123456"), T0.timestamp() + 60)
    assert check_code(stored, ["new", "old"], "join", "+84911222333", "123456",
                      T0.timestamp()).outcome == "ok"
    assert check_code(stored, ["new"], "join", "+84911222333", "123456",
                      T0.timestamp()).outcome == "wrong"
    token = unsubscribe_token("old", "sub-0123456789abcdef")
    # the HMAC checked with `openssl dgst -sha256 -hmac old` of "unsub:sub-0123456789abcdef"
    assert token == "sub-0123456789abcdef.549136cbd46109dc98f41ae2878a1525"
    assert subscriber_of(["new", "old"], token) == "sub-0123456789abcdef"
    assert subscriber_of(["new"], token) is None


# --- rotation of session keys ---------------------------------------------------------------

def _cookie(key: str, session: dict[str, str]) -> str:
    """A session cookie as Starlette signs it with `key`."""
    data = base64.b64encode(json.dumps(session).encode())
    return itsdangerous.TimestampSigner(key).sign(data).decode()


def _who(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.session.get("user", "nobody"))


def _app(now: list[datetime]) -> Starlette:
    app = Starlette(routes=[Route("/", _who)])
    app.add_middleware(RotatingSessionMiddleware, secret_key="session:new",
                       previous_keys=["session:old"], previous_until=T0 + WEEK,
                       clock=lambda: now[0], session_cookie="loa_session")
    return app


async def test_a_session_cookie_signed_with_the_old_key_counts_until_the_grace_ends() -> None:
    """Old-key cookies log in during the grace period, not after; new-key ones always."""
    now = [T0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(now)),
                                 base_url="http://loa.test") as client:

        async def who(key: str) -> str:
            cookie = f"loa_session={_cookie(key, {'user': 'mai'})}"
            return (await client.get("/", headers={"cookie": cookie})).text

        assert await who("session:old") == "mai"
        assert await who("session:other") == "nobody"
        now[0] = T0 + WEEK
        assert await who("session:old") == "nobody"
        assert await who("session:new") == "mai"


def test_previous_session_keys_come_from_the_settings() -> None:
    """Earlier session secrets (prefixed like the current one) and when they stop counting."""
    settings = Settings(session_secret="s-new", session_secrets_previous="s-old",
                        keys_rotated_at="2026-11-22T08:00:00+00:00",
                        key_rotation_grace_s=60)  # type: ignore[arg-type]
    assert previous_session_keys(settings) == ["session:s-old"]
    assert rotation_ends(settings) == T0 + timedelta(seconds=60)
    falls_back = Settings(link_secret="l-new", link_secrets_previous="l-old")  # type: ignore[arg-type]
    assert previous_session_keys(falls_back) == ["session:l-old"]
    assert rotation_ends(falls_back) is None
