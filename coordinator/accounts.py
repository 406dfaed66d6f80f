"""Accounts of the people who log in to the web console, kept in Redis.

Roles: `duty_officer` (incidents, reports, statements), `approver` (decides the
requests of the person the account belongs to), `admin` (all of a duty officer's
work, and accounts). Passwords are hashed with argon2id; a hash made with older
parameters is replaced at the next successful login.

Duty officers and admins log in with a second factor (TOTP, see
:mod:`coordinator.second_factor`); approvers may have one. The account's hash in Redis
holds, besides the account and the password hash: `epoch`, a random value that a session
must carry (made anew when the account is saved, re-enrolled or logged out everywhere, so
a removed and re-created account shares nothing with its old cookies); `totp`, the sealed
secret; `totp_step`, the last time step a code was accepted at (a code is good once);
`totp_pending`, a secret shown at a first login's enrolment and not yet confirmed.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from datetime import datetime
from typing import Annotated, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, Field, StringConstraints

from coordinator.city import City
from coordinator.errors import LoaError
from coordinator.events import AuditEvent, utcnow
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, queue_audit, transact

Role = Literal["duty_officer", "approver", "translator", "admin"]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,39}$")]
MIN_PASSWORD = 10
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so a wrong name costs as long as a wrong
    password. Made by :func:`prepare_logins` or the first such login, not at import:
    hashing takes about 0.15 s, which every `loa` command paid at its start."""
    return _hasher.hash("not-a-real-password")


async def prepare_logins() -> None:
    """For a process that takes logins (the web, at its start): make the decoy now, off the
    event loop, so that even its first unknown username costs what a wrong password does."""
    await asyncio.to_thread(_dummy_hash)


class AccountError(LoaError):
    """An account that cannot be made as asked; the message says why."""


class Account(BaseModel):
    """Who may log in, as whom, to do what."""

    username: Username
    role: Role
    person_id: str = Field(description="the person in config/ the account acts as ('' for none)")
    name: str
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def can_run_incidents(self) -> bool:
        """Duty officers and admins file reports and steer incidents."""
        return self.role in ("duty_officer", "admin")

    @property
    def needs_second_factor(self) -> bool:
        """Duty officers and admins may not log in without a TOTP code."""
        return self.role in ("duty_officer", "admin")

    @property
    def actor(self) -> str:
        """The id the audit trail records: the person, else `account:NAME`."""
        return self.person_id or f"account:{self.username}"


def new_account(username: str, role: Role, person_id: str, city: City) -> Account:
    """An account checked against the configured people; AccountError naming what is wrong."""
    person = city.people.get(person_id) if person_id else None
    if person_id and person is None:
        raise AccountError(f"person: no one with id {person_id!r} in config/departments.yaml")
    if role == "approver" and person is None:
        raise AccountError("person: an approver account must name the approver it belongs to")
    if role == "duty_officer" and person_id and person_id not in city.duty_officers:
        raise AccountError(f"person: {person_id} is not a duty officer in config/")
    try:
        return Account(username=username, role=role, person_id=person_id,
                       name=person.name if person else username)
    except ValueError as exc:
        raise AccountError(f"username: {username!r} must be 2-40 of a-z 0-9 . _ -") from exc


def new_epoch() -> str:
    """A fresh session epoch: random, so a re-created account never repeats an old one."""
    return secrets.token_urlsafe(16)


async def save_account(redis: Redis, keys: Keys, account: Account, password: str,
                       by: str, interface: Literal["cli", "web"] = "cli",
                       sealed_totp: str | None = None) -> None:
    """Create or replace an account with this password and (sealed) TOTP secret, ending
    its sessions (audited); AccountError for a short password."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    hashed = await asyncio.to_thread(_hasher.hash, password)
    key = keys.account(account.username)
    async with redis.pipeline(transaction=True) as pipe:
        # a replaced account keeps nothing of the old one: no second factor, no sessions
        pipe.hdel(key, "totp", "totp_step", "totp_pending", "generation")
        pipe.hset(key, mapping={"account": account.model_dump_json(), "hash": hashed,
                                "epoch": new_epoch(),
                                **({"totp": sealed_totp} if sealed_totp else {})})
        pipe.sadd(keys.accounts(), account.username)
        queue_audit(pipe, keys, AuditEvent(actor=by, action="account.saved", interface=interface,
                                           subject=account.username,
                                           detail={"role": account.role,
                                                   "person": account.person_id,
                                                   "totp": "yes" if sealed_totp else "no"}))
        await pipe.execute()


async def load_account(redis: Redis, keys: Keys, username: str) -> Account | None:
    """The account, or None."""
    raw = await redis.hget(keys.account(username), "account")
    return Account.model_validate_json(raw) if raw else None


async def list_accounts(redis: Redis, keys: Keys) -> list[Account]:
    """Every account, by username."""
    found = [await load_account(redis, keys, u) for u in sorted(await redis.smembers(
        keys.accounts()))]
    return [a for a in found if a is not None]


async def check_password(redis: Redis, keys: Keys, username: str, password: str
                         ) -> Account | None:
    """The account when the password is right, else None (same work either way)."""
    row = await redis.hgetall(keys.account(username))
    stored = row.get("hash") or await asyncio.to_thread(_dummy_hash)
    try:  # argon2 takes a fifth of a second of CPU: off the event loop
        await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if not row:
        return None
    if _hasher.check_needs_rehash(stored):
        await redis.hset(keys.account(username), "hash",
                         await asyncio.to_thread(_hasher.hash, password))
    return Account.model_validate_json(row["account"])


async def remove_account(redis: Redis, keys: Keys, username: str, by: str) -> bool:
    """Remove an account (audited); False when there was none."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.account(username))
        pipe.srem(keys.accounts(), username)
        queue_audit(pipe, keys, AuditEvent(actor=by, action="account.removed",
                                           interface="cli", subject=username))
        removed, _, *_ = await pipe.execute()
    return bool(removed)


async def first_admin(redis: Redis, keys: Keys, password: str) -> Account | None:
    """An `admin` account when there are no accounts at all (a fresh `loa up`); None when
    accounts exist."""
    if await redis.scard(keys.accounts()):
        return None
    account = Account(username="admin", role="admin", person_id="", name="Administrator")
    await save_account(redis, keys, account, password, by="loa up", interface="cli")
    return account


async def session_epoch(redis: Redis, keys: Keys, username: str) -> str:
    """Which sessions of an account are valid: those made at this epoch ('' when there is
    no account). Saving the account, a new second factor or a logout changes it, which
    ends every session of the account."""
    return str(await redis.hget(keys.account(username), "epoch") or "")


async def end_sessions(redis: Redis, keys: Keys, username: str) -> None:
    """Log the account out everywhere."""

    async def body(pipe: Pipeline) -> None:
        if await pipe.exists(keys.account(username)):
            pipe.multi()
            pipe.hset(keys.account(username), "epoch", new_epoch())

    await transact(redis, [keys.account(username)], body)


async def second_factor(redis: Redis, keys: Keys, username: str) -> str | None:
    """The account's sealed TOTP secret, or None when it has none."""
    sealed = await redis.hget(keys.account(username), "totp")
    return str(sealed) if sealed else None


async def enrol_second_factor(redis: Redis, keys: Keys, username: str, sealed: str, by: str,
                              interface: Literal["cli", "web"] = "cli") -> bool:
    """Give the account this sealed TOTP secret and end its sessions (audited); False when
    there is no such account."""
    key = keys.account(username)

    async def body(pipe: Pipeline) -> bool:
        if not await pipe.exists(key):
            return False
        pipe.multi()
        pipe.hdel(key, "totp_step", "totp_pending")
        pipe.hset(key, mapping={"totp": sealed, "epoch": new_epoch()})
        queue_audit(pipe, keys, AuditEvent(actor=by, action="account.totp_enrolled",
                                           interface=interface, subject=username))
        return True

    return await transact(redis, [key], body)


async def offer_second_factor(redis: Redis, keys: Keys, username: str, epoch: str,
                              sealed: str, by: str) -> bool:
    """Keep a secret shown at a first login until a code from it confirms it (audited);
    False when the account moved on (another epoch) or has a second factor already."""
    key = keys.account(username)

    async def body(pipe: Pipeline) -> bool:
        current, enrolled = await pipe.hmget(key, "epoch", "totp")
        if current != epoch or enrolled:
            return False
        pipe.multi()
        pipe.hset(key, "totp_pending", sealed)
        queue_audit(pipe, keys, AuditEvent(actor=by, action="account.totp_offered",
                                           interface="web", subject=username))
        return True

    return await transact(redis, [key], body)


async def offered_second_factor(redis: Redis, keys: Keys, username: str) -> str | None:
    """The sealed secret shown at a first login and not yet confirmed, or None."""
    sealed = await redis.hget(keys.account(username), "totp_pending")
    return str(sealed) if sealed else None


async def confirm_second_factor(redis: Redis, keys: Keys, username: str, epoch: str,
                                step: int, by: str) -> bool:
    """Make the offered secret the account's, its code of `step` used (audited); False when
    the account moved on, has a second factor already, or was offered none."""
    key = keys.account(username)

    async def body(pipe: Pipeline) -> bool:
        current, enrolled, offered = await pipe.hmget(key, "epoch", "totp", "totp_pending")
        if current != epoch or enrolled or not offered:
            return False
        pipe.multi()
        pipe.hdel(key, "totp_pending")
        pipe.hset(key, mapping={"totp": offered, "totp_step": str(step)})
        queue_audit(pipe, keys, AuditEvent(actor=by, action="account.totp_enrolled",
                                           interface="web", subject=username))
        return True

    return await transact(redis, [key], body)


async def use_code(redis: Redis, keys: Keys, username: str, epoch: str, step: int) -> bool:
    """Record that the account's code of time step `step` was used; False when that code
    or a later one was used already (a replay), or the account moved on."""
    key = keys.account(username)

    async def body(pipe: Pipeline) -> bool:
        current, last = await pipe.hmget(key, "epoch", "totp_step")
        if current != epoch or (last is not None and int(last) >= step):
            return False
        pipe.multi()
        pipe.hset(key, "totp_step", str(step))
        return True

    return await transact(redis, [key], body)
