"""API tokens for machines and people: made once, shown once, kept only as a hash.

A token is `loa_` and 32 random bytes (URL-safe). Redis keeps the SHA-256 of
it (a token has 256 bits of entropy, so an unkeyed hash cannot be reversed by
trying) and the holder's record: name, role, scope. Revoking deletes the hash's
entry at once, so the next request with that token is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from coordinator.access import Principal, Role
from coordinator.city import City
from coordinator.errors import LoaError
from coordinator.events import AuditEvent, Interface, utcnow
from coordinator.keys import Keys
from coordinator.state import Redis, queue_audit

TokenName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,39}$")]
PREFIX = "loa_"
# Roles a token may carry; `anonymous` is no role to hand out.
TOKEN_ROLES = tuple(r for r in Role if r != Role.anonymous)


class TokenError(LoaError):
    """A token that cannot be made as asked; the message names the option."""


class TokenRecord(BaseModel):
    """Who holds a token, with which role and scope."""

    name: TokenName
    role: Role
    department: str = ""
    area: str = ""
    person_id: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""
    revoked_at: datetime | None = None
    issue: int = 1  # the how-manyth token of this name: a name given again after a revoke

    def principal(self) -> Principal:
        """The caller this token stands for. The ids its reports name are its own: a token
        of a name given again does not share them with the revoked one before it."""
        return Principal(kind="token", username=self.name, role=self.role, name=self.name,
                         person_id=self.person_id, department=self.department, area=self.area,
                         credential=str(self.issue) if self.issue > 1 else "")


def token_hash(token: str) -> str:
    """What Redis keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_record(name: str, role: str, city: City, department: str = "", area: str = "",
                     person_id: str = "", by: str = "") -> TokenRecord:
    """A token record checked against config/; TokenError naming the bad option."""
    try:
        chosen = Role(role)
    except ValueError:
        raise TokenError(f"--role: {role!r} is not one of "
                         f"{', '.join(r.value for r in TOKEN_ROLES)}") from None
    if chosen == Role.anonymous:
        raise TokenError("--role: anonymous is no role to give a token")
    if sum(bool(v) for v in (department, area, person_id)) > 1:
        raise TokenError("give at most one of --department, --area, --person")
    if department and department not in city.departments:
        raise TokenError(f"--department: no department {department!r} in config/")
    if area and area not in city.areas:
        raise TokenError(f"--area: {city.unknown_area(area)}")
    if person_id and person_id not in city.people:
        raise TokenError(f"--person: no one with id {person_id!r} in config/")
    if chosen == Role.approver and not person_id:
        raise TokenError("--person: an approver token must name the approver it belongs to")
    try:
        return TokenRecord(name=name, role=chosen, department=department, area=area,
                           person_id=person_id, created_by=by)
    except ValueError:
        raise TokenError(f"NAME: {name!r} must be 2-40 of a-z 0-9 . _ -") from None


async def issue_token(redis: Redis, keys: Keys, record: TokenRecord,
                      interface: Interface = "cli", reason: str = "") -> str:
    """Store a new token for `record` and return it (the only time it is seen); TokenError
    when a live token of that name exists. `reason`: why, as its maker said (audited)."""
    token = PREFIX + secrets.token_urlsafe(32)
    digest = token_hash(token)
    # one live token per name: the name is how people refer to it (list, revoke)
    if not await redis.hsetnx(keys.token_names(), record.name, digest):
        raise TokenError(f"NAME: a token named {record.name!r} exists; revoke it first")
    record = record.model_copy(update={
        "issue": await redis.hincrby(keys.token_issues(), record.name, 1)})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.token(digest), record.model_dump_json())
        queue_audit(pipe, keys, AuditEvent(
            actor=record.created_by or "operator", action="token.issued", interface=interface,
            subject=record.name, detail={"role": record.role.value, "scope":
                                         record.principal().scope, **_because(reason)}))
        await pipe.execute()
    return token


async def principal_for_token(redis: Redis, keys: Keys, token: str) -> Principal | None:
    """The holder of a live token, or None."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    raw = await redis.get(keys.token(token_hash(token)))
    return TokenRecord.model_validate_json(raw).principal() if raw else None


async def list_tokens(redis: Redis, keys: Keys) -> list[TokenRecord]:
    """Every live token's record, by name (never the token)."""
    names = await redis.hgetall(keys.token_names())
    out = []
    for name in sorted(names):
        raw = await redis.get(keys.token(names[name]))
        if raw:
            out.append(TokenRecord.model_validate_json(raw))
    return out


async def revoke_token(redis: Redis, keys: Keys, name: str, by: str,
                       interface: Interface = "cli", reason: str = "") -> bool:
    """Revoke the token of that name at once (audited, with `reason` when one is given);
    False when there is none."""
    digest = await redis.hget(keys.token_names(), name)
    if digest is None:
        return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.token(digest))
        pipe.hdel(keys.token_names(), name)
        queue_audit(pipe, keys, AuditEvent(actor=by, action="token.revoked",
                                           interface=interface, subject=name,
                                           detail=_because(reason)))
        await pipe.execute()
    return True


def _because(reason: str) -> dict[str, object]:
    """An audit entry's `reason`, when one was given. Pure."""
    return {"reason": reason.strip()} if reason.strip() else {}
