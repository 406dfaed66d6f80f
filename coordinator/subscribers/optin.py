"""Double opt-in for the public web form, and leaving by phone: nobody receives anything
until the contact they gave has answered.

What the form asked for waits under its own key (an optin request) while the registry
holds the person as `pending` (or as they were: an `active` subscriber is not downgraded
and one who opted out stays out until they confirm). An email contact confirms with a
signed, expiring link; a phone with a 6-digit code sent by SMS, kept only as an HMAC,
valid for 15 minutes and for at most 5 wrong tries. Each confirmed contact becomes a
channel of the active subscriber, with the consent time of the confirmation.

The codes and links themselves are in :mod:`coordinator.subscribers.proofs`. The pure
parts here (what a confirmation makes of a subscriber, form checks) take the time as an
argument; the rest reads and writes Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from channels.contacts import InvalidContact, e164, email_address
from coordinator.events import AuditEvent, DeliveryRequest, Interface
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, record_audit, transact
from coordinator.subscribers import store
from coordinator.subscribers.models import ALL_TOPICS, Subscriber
from coordinator.subscribers.proofs import CODE_TTL_S, LINK_TTL, Purpose
from coordinator.subscribers.registry import (
    find_subscriber,
    register,
    save_subscriber,
)
from coordinator.translations import N_

REQUEST_TTL_S = int(LINK_TTL.total_seconds())
Channel = Literal["sms", "email"]
Gettext = Callable[[str], str]


# --- what the form asks for (pure) ----------------------------------------------------------

NO_CONTACT = N_("Give a phone number or an email address.")


def _english(message: str) -> str:
    return message


def _contacts(phone: str, email: str, region: str, errors: dict[str, str], _: Gettext
              ) -> tuple[str | None, str | None]:
    """The phone in E.164 and the normalised email; problems go into `errors`."""
    phone_e164 = email_norm = None
    if phone.strip():
        try:
            phone_e164 = e164(phone.strip(), region)
        except InvalidContact:
            errors["phone"] = _("This is not a valid phone number.")
    if email.strip():
        try:
            email_norm = email_address(email.strip())
        except InvalidContact:
            errors["email"] = _("This is not a valid email address.")
    if not phone.strip() and not email.strip():
        errors["contact"] = _(NO_CONTACT)
    return phone_e164, email_norm


def _choices(areas: list[str], topics: list[str], known_areas: Collection[str],
             known_topics: Collection[str], errors: dict[str, str], _: Gettext) -> list[str]:
    """The topics asked for (all when none or `*`); problems go into `errors`."""
    unknown = [a for a in areas if a not in known_areas]
    if not areas:
        errors["areas"] = _("Choose at least one area.")
    elif unknown:
        errors["areas"] = _("Unknown area: {codes}").format(codes=", ".join(unknown))
    wanted = [ALL_TOPICS] if not topics or ALL_TOPICS in topics else list(dict.fromkeys(topics))
    unknown = [t for t in wanted if t != ALL_TOPICS and t not in known_topics]
    if unknown:
        errors["topics"] = _("Unknown topic: {codes}").format(codes=", ".join(unknown))
    return wanted


def requested_subscriber(phone: str, email: str, language: str, areas: list[str],
                         topics: list[str], known_areas: Collection[str],
                         known_topics: Collection[str], known_languages: Collection[str],
                         region: str = "VN", drills: bool = False, _: Gettext = _english
                         ) -> tuple[Subscriber | None, dict[str, str]]:
    """The pending subscriber the form describes, or the problems by field name, in the
    words `_` gives (the reader's catalog). Pure."""
    errors: dict[str, str] = {}
    phone_e164, email_norm = _contacts(phone, email, region, errors, _)
    if language not in known_languages:
        errors["language"] = _("Choose one of the languages listed.")
    wanted_topics = _choices(areas, topics, known_areas, known_topics, errors, _)
    if errors:
        return None, errors
    channels: list[Channel] = []
    if phone_e164:
        channels.append("sms")
    if email_norm:
        channels.append("email")
    try:
        return Subscriber(phone=phone_e164, email=email_norm, language=language,
                          areas=list(dict.fromkeys(areas)), topics=wanted_topics,
                          channels=channels, drills=drills, status="pending",
                          consent_source="web"), {}
    except ValidationError as exc:  # pragma: no cover - the checks above cover the model's
        return None, {str(e["loc"][0]) if e["loc"] else "contact": e["msg"]
                      for e in exc.errors()}


def parse_contact(typed: str, region: str = "VN") -> tuple[Channel, str]:
    """A phone (E.164) or an email address from one field; raises InvalidContact. Pure."""
    typed = typed.strip()
    if not typed:
        raise InvalidContact(NO_CONTACT)
    if "@" in typed:
        return "email", email_address(typed)
    return "sms", e164(typed, region)


# --- what a confirmation makes of the subscriber (pure) -------------------------------------

class OptinRequest(BaseModel):
    """A web subscription waiting for its contacts to confirm."""

    subscriber: Subscriber
    confirmed: list[Channel] = Field(default_factory=list)
    email_nonce: str = ""
    requested_at: datetime


def applied_subscriber(wanted: Subscriber, confirmed: Collection[str],
                       existing: Subscriber | None, now: datetime) -> Subscriber | None:
    """The active subscriber once `confirmed` channels answered: what was asked for, on the
    channels whose contact is proven (confirmed now, or already active with the same
    contact). None while none is. Pure.

    A record that is not pending changes only for someone who proved one of its own
    contacts: typing another person's address next to one's own phone must not rewrite
    (or take over) their subscription. Without that proof the confirmed contacts become a
    record of their own: one without an id yet, which the registry finds by contact or
    makes (registry.register)."""
    owns = existing is None or existing.status == "pending" or any(
        c in confirmed and c in existing.channels and existing.contact(c) == wanted.contact(c)
        for c in ("sms", "email"))

    def proven(channel: str) -> bool:
        if channel in confirmed:
            return True
        return (owns and existing is not None and existing.status == "active"
                and channel in existing.channels
                and existing.contact(channel) == wanted.contact(channel))

    channels = [c for c in wanted.channels if proven(c)]
    if not channels:
        return None
    phone = wanted.phone if "sms" in channels else None
    email = wanted.email if "email" in channels else None
    return Subscriber(id=wanted.id if owns else "", phone=phone,
                      email=email, language=wanted.language, areas=wanted.areas,
                      topics=wanted.topics, channels=channels, role=wanted.role,
                      drills=wanted.drills,
                      lists=existing.lists if owns and existing is not None else [],
                      status="active", consent_at=now, consent_source="web")


# --- messages (pure) ------------------------------------------------------------------------

def code_sms(code: str, purpose: Purpose, _: Gettext) -> str:
    """The SMS that carries a code, in the words `_` gives (a language's catalog)."""
    text = (_("[Loa] Your code to subscribe to Loa updates: {code} (valid {minutes} min). "
              "Ignore this SMS if you did not ask for it.") if purpose == "join" else
            _("[Loa] Your code to stop Loa updates: {code} (valid {minutes} min). Ignore "
              "this SMS if you did not ask for it."))
    return text.format(code=code, minutes=CODE_TTL_S // 60)


def confirm_email(link: str, area_names: list[str], _: Gettext) -> tuple[str, str]:
    """(subject, text) of the email that carries a confirmation link."""
    return (_("[Loa] Confirm your subscription"),
            _("Someone (we hope you) asked to receive official Loa updates about {areas} at "
              "this address.\n\nConfirm here (valid {days} days):\n{link}\n\nIf it was not "
              "you, ignore this email: nothing will be sent.").format(
                areas=", ".join(area_names), days=LINK_TTL.days, link=link))


def leave_email(link: str, _: Gettext) -> tuple[str, str]:
    """(subject, text) of the email that carries an unsubscribe link."""
    return (_("[Loa] Stop receiving updates"),
            _("Someone (we hope you) asked to stop Loa updates to this address.\n\n"
              "Unsubscribe here:\n{link}\n\nIf it was not you, ignore this email.").format(
                link=link))


def message(channel: Channel, recipient: str, text: str, language: str,
            subject: str = "") -> DeliveryRequest:
    """A confirmation message for the channel workers (no subscriber id: a pending subscriber
    must still get it)."""
    return DeliveryRequest(id=f"optin:{channel}:{secrets.token_hex(10)}", channel=channel,
                           recipient=recipient, text=text, subject=subject,
                           language=language, purpose="confirmation")


# --- Redis ----------------------------------------------------------------------------------

async def existing_subscriber(redis: Redis, keys: Keys, phone: str | None,
                              email: str | None) -> Subscriber | None:
    """The registry's record for this phone, else for this email."""
    for contact in (phone, email):
        found = await find_subscriber(redis, keys, contact) if contact else None
        if found is not None:
            return found
    return None


async def request_subscription(redis: Redis, keys: Keys, wanted: Subscriber, now: datetime
                               ) -> OptinRequest:
    """Keep what the form asked for until it is confirmed. The registry holds the person as
    `pending` unless they are already active or opted out (then they stay as they are)."""
    existing = await existing_subscriber(redis, keys, wanted.phone, wanted.email)
    wanted = wanted.model_copy(update={"status": "pending", "consent_source": "web"})
    if existing is None:  # a new record, and its id
        wanted, _ = await register(redis, keys, wanted)
    else:
        wanted = wanted.model_copy(update={"id": existing.id})
        if existing.status == "pending":
            await save_subscriber(redis, keys, wanted)
    sub_id = wanted.id
    request = OptinRequest(subscriber=wanted, requested_at=now,
                           email_nonce=secrets.token_urlsafe(12) if wanted.email else "")
    await redis.set(keys.optin_request(sub_id), request.model_dump_json(), ex=REQUEST_TTL_S)
    await record_audit(redis, keys, AuditEvent(
        at=now, actor=sub_id, action="subscriber.requested", interface="web",
        detail={"channels": wanted.channels, "areas": wanted.areas,
                "was": existing.status if existing else "new"}))
    return request


async def confirm_contact(redis: Redis, keys: Keys, sub_id: str, channel: Channel,
                          now: datetime, nonce: str | None = None) -> Subscriber | None:
    """One contact of a waiting request answered: the subscriber becomes active on the
    channels proven so far, consent recorded now. None when no request waits (expired,
    done, or `nonce` is not the latest email link's)."""
    key = keys.optin_request(sub_id)

    async def body(pipe: Pipeline) -> OptinRequest | None:
        raw = await pipe.get(key)
        request = OptinRequest.model_validate_json(raw) if raw else None
        if (request is None or channel not in request.subscriber.channels
                or (channel == "email" and nonce != request.email_nonce)):
            return None
        confirmed = sorted({*request.confirmed, channel})
        done = request.model_copy(update={"confirmed": confirmed})
        pipe.multi()
        if set(confirmed) >= set(request.subscriber.channels):
            pipe.delete(key)
        else:
            pipe.set(key, done.model_dump_json(), keepttl=True)
        return done

    request = await transact(redis, [key], body)
    if request is None:
        return None
    existing = await find_by_id(redis, keys, sub_id)
    applied = applied_subscriber(request.subscriber, request.confirmed, existing, now)
    if applied is None:  # pragma: no cover - the confirmed channel is one of the wanted
        return None
    if applied.id:
        await save_subscriber(redis, keys, applied, resubscribe=True)
    else:  # the proven contacts alone, without the record they were typed next to
        applied, _ = await register(redis, keys, applied, resubscribe=True)
    await _stamp_consent(redis, keys, applied.id, now)
    await record_audit(redis, keys, AuditEvent(
        at=now, actor=applied.id, action="subscriber.confirmed", interface="web",
        detail={"channel": channel, "channels": applied.channels, "areas": applied.areas,
                "how": "sms code" if channel == "sms" else "email link"}))
    return applied


async def _stamp_consent(redis: Redis, keys: Keys, sub_id: str, now: datetime) -> None:
    """The consent time is the confirmation's (saving keeps the first one)."""
    number = await store.number_of(redis, keys, sub_id)
    if number is None:
        return
    key = store.record_key(keys, number)

    async def body(pipe: Pipeline) -> None:
        sub = await store.read(pipe, keys, number)
        if sub is None or sub.id != sub_id:
            return
        pipe.multi()
        pipe.hset(key, str(number), store.encode(sub.model_copy(update={
            "consent_at": now, "consent_source": "web"}), number))

    await transact(redis, [key], body)


async def find_by_id(redis: Redis, keys: Keys, sub_id: str) -> Subscriber | None:
    """The subscriber with this id, if any."""
    return await store.by_id(redis, keys, sub_id)


async def leave(redis: Redis, keys: Keys, sub_id: str, how: str, now: datetime,
                interface: Interface = "web") -> Subscriber | None:
    """Opt out (and drop any subscription still waiting); None for an unknown id. The
    audit names `how` and the `interface` it came by (an email's link: "email")."""
    sub = await find_by_id(redis, keys, sub_id)
    if sub is None:
        return None
    await redis.delete(keys.optin_request(sub_id))
    if sub.status != "opted_out":
        sub = sub.model_copy(update={"status": "opted_out"})
        await save_subscriber(redis, keys, sub)
        await record_audit(redis, keys, AuditEvent(
            at=now, actor=sub.id, action="subscriber.opted_out", interface=interface,
            detail={"how": how}))
    return sub


# --- leaving and coming back by SMS (STOP / START) -------------------------------------------

async def subscriber_to_change(pipe: Pipeline, keys: Keys, phone: str
                               ) -> tuple[int, Subscriber] | None:
    """The subscriber with this phone and its number, read inside a transaction (before
    MULTI) with its record WATCHed; the caller WATCHed the phone's contact index. None when
    nobody has it."""
    number = await store.number_by_contact(pipe, keys, phone)
    if number is None:
        return None
    await pipe.watch(store.record_key(keys, number))
    sub = await store.read(pipe, keys, number)
    return (number, sub) if sub is not None else None


def queue_sms_opt_out(pipe: Pipeline, keys: Keys, phone: str,
                      found: tuple[int, Subscriber] | None, stop: bool) -> None:
    """Queue (inside MULTI) what STOP (or START) from `phone` changes: the SMS opt-out set,
    and the status of its subscriber, if any (record and active bit), as the registry
    would save it."""
    if stop:
        pipe.sadd(keys.opted_out("sms"), phone)
    else:
        pipe.srem(keys.opted_out("sms"), phone)
    status = "opted_out" if stop else "active"
    if found is None or found[1].status == status:
        return
    number, sub = found
    store.queue_write(pipe, keys, number, sub, sub.model_copy(update={"status": status}),
                      with_contacts=False)  # only the status changes
