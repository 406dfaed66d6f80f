"""Tips: what residents and journalists tell the city without an account.

A tip is unverified. It reaches the duty officers' board and can be attached to an
incident, but it never opens an incident, never changes one's severity, area or text,
and so no timer can ever publish it (promise 7): only a duty officer who files a
report of their own, under their own name, turns what a tip says into Loa's words.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from coordinator import observability as obs
from coordinator.city import City
from coordinator.dispatch.deliveries import Send
from coordinator.events import AuditEvent, Interface, Slug, utcnow
from coordinator.incidents.surge import Surge, detect, queue_count, tell_duty_officers
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Pipeline, Redis, queue_audit, transact

log = obs.get_logger("tips")
MAX_TIP_TEXT = 2000
TIPS_PER_CLIENT = 10  # anonymous tips per client address ...
TIPS_WINDOW_S = 600  # ... in this many seconds (a credential's holder is accountable: no limit)


class TipIn(BaseModel):
    """A tip as the public door takes it."""

    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=10,
                                           max_length=MAX_TIP_TEXT)]
    kind: Slug | None = None
    area: Slug | None = None


class Tip(TipIn):
    """A stored tip: unverified, with where it went."""

    id: str
    received_at: datetime = Field(default_factory=utcnow)
    received_via: Interface = "web"
    attached_to: str = ""
    filed_by: str = ""  # a credential's holder (their audit actor); '' for anyone else


def new_tip_id() -> str:
    """A fresh, unguessable tip id."""
    return f"TIP-{secrets.token_hex(6)}"


async def file_tip(redis: Redis, keys: Keys, tip: Tip, surge_path: Sequence[str] = (),
                   surge_window_s: float = 600.0) -> None:
    """Keep a tip for the duty officers (audited as from its credential's holder, else from
    an unverified source), counted for the surge detector in each area of `surge_path` when
    it names its kind."""
    async with redis.pipeline(transaction=True) as pipe:
        if tip.kind and surge_path:
            queue_count(pipe, keys, tip.kind, list(surge_path), tip.received_at.timestamp(),
                        surge_window_s)
        # without an empty filed_by, which a release from before refuses to read
        pipe.set(keys.tip(tip.id), tip.model_dump_json(
            exclude=set() if tip.filed_by else {"filed_by"}))
        pipe.zadd(keys.tips(), {tip.id: tip.received_at.timestamp()})
        queue_audit(pipe, keys, AuditEvent(
            at=tip.received_at, actor=tip.filed_by or "unverified source", action="tip.received",
            interface=tip.received_via, subject=tip.id,
            detail={"kind": tip.kind, "area": tip.area}))
        await pipe.execute()


_VOICE_KEY = secrets.token_bytes(32)


def voice_of(address: str, settings: Settings) -> str:
    """Who sent an anonymous tip, for counting only: a keyed hash of the client address
    (an IPv6 address by its /64, what one household or phone gets), so the key neither
    names the address nor can be reversed by trying every IPv4 address. Keyed with
    LOA_SECRET_KEY (the same in every process), else a key of this process."""
    try:
        ip = ipaddress.ip_address(address)
        if ip.version == 6:
            address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        pass
    key = (settings.secret_key.get_secret_value().encode() if settings.secret_key
           else _VOICE_KEY)
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:24]


async def take_tip(redis: Redis, keys: Keys, city: City, settings: Settings, tip: Tip,
                   send: Send, source: str) -> Surge | None:
    """File a tip and raise the surge it completes, telling the duty officers; the surge,
    if one was raised.

    A tip counts for the surge detector once per `source` (the client's address, or the
    credential's holder), kind and window: one voice sending ten tips is one voice, not a
    surge, whether or not it has a credential."""
    path = city.ancestors(tip.area) if tip.kind and tip.area else []
    if path and tip.kind and not await redis.set(
            keys.surge_voice(tip.kind, voice_of(source, settings)), "1", nx=True,
            ex=int(settings.surge_window_s)):
        path = []  # heard from this source in this window: kept, not counted again
    await file_tip(redis, keys, tip, path, settings.surge_window_s)
    if not path or tip.kind is None:
        return None
    surge = await detect(redis, keys, city, tip.kind, path, tip.received_at,
                         settings.surge_window_s, settings.surge_threshold)
    if surge is not None:
        told = await tell_duty_officers(city, surge, send)
        log.warning("surge raised by a tip", surge=surge.id, duty_officers_told=told)
    return surge


async def recent_tips(redis: Redis, keys: Keys, start: int = 0, limit: int = 20) -> list[Tip]:
    """Tips, newest first (one round trip for the page)."""
    ids = await redis.zrevrange(keys.tips(), start, start + limit - 1)
    async with redis.pipeline(transaction=False) as pipe:
        for tip_id in ids:
            pipe.get(keys.tip(tip_id))
        found = await pipe.execute()
    return [Tip.model_validate_json(raw) for raw in found if raw]


async def attach_tip(redis: Redis, keys: Keys, tip_id: str, incident_id: str, actor: str,
                     interface: Interface = "web") -> str | None:
    """A duty officer attaches a tip to an incident: it shows in the timeline, and changes
    nothing of the incident. Returns why not, or None when done (again: no effect)."""
    key = keys.tip(tip_id)

    async def body(pipe: Pipeline) -> str | None:
        raw = await pipe.get(key)
        if raw is None:
            return f"no tip {tip_id}"
        if not await pipe.exists(keys.incident(incident_id)):
            return f"no incident {incident_id}"
        tip = Tip.model_validate_json(raw)
        if tip.attached_to:
            return None if tip.attached_to == incident_id else (
                f"{tip_id} is attached to {tip.attached_to} already")
        pipe.multi()
        pipe.set(key, tip.model_copy(update={"attached_to": incident_id}).model_dump_json())
        queue_audit(pipe, keys, AuditEvent(
            actor=actor, action="tip.attached", interface=interface, incident_id=incident_id,
            subject=tip_id, detail={"text": tip.text, "verified": False}))
        return None

    return await transact(redis, [key], body)
