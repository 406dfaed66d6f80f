"""The public subscribe form with double opt-in, and leaving through the web.

`/subscribe` takes a phone and/or an email, a language, areas and topics; nothing is sent
to the person until they confirm: an email gets a signed link (`/subscribe/confirm/...`,
where GET only asks and POST confirms, because mail scanners follow links), a phone gets a
6-digit code to type at `/subscribe/verify`. `/subscribe/leave` sends an email the existing
unsubscribe link, or a phone a code to type at `/subscribe/leave/verify`. Every POST checks
the CSRF token and counts against the public form rate limit; each contact may be sent at
most a few messages an hour."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from channels.contacts import InvalidContact
from coordinator import queries
from coordinator.access import Action
from coordinator.dispatch.deliveries import queue_delivery
from coordinator.errors import BrokerUnavailable
from coordinator.events import DeliveryRequest, utcnow
from coordinator.rate_limits import Limit
from coordinator.subscribers import optin, proofs
from coordinator.subscribers.models import ALL_TOPICS, Subscriber
from coordinator.subscribers.unsubscribe import unsubscribe_token
from coordinator.web.auth import locked_router
from coordinator.web.pages import language_of, page, words_of
from coordinator.web.security import PUBLIC_FORM, check_csrf, rate_limit
from coordinator.web.state import State, web_state

subscribe = locked_router(Action.subscribe, prefix="/subscribe", include_in_schema=False)

# Messages one phone or address may be sent from these forms (SMS pumping, mail bombing).
PER_CONTACT = Limit("optin-contact", 5, 3600)
JOIN_PHONE, LEAVE_PHONE, JOIN_EMAIL = "optin_phone", "leave_phone", "optin_email"


def _secret(st: State) -> str:
    """The link secret (HMACs and links need it); 503 without one."""
    return _verifying(st)[0]


def _verifying(st: State) -> list[str]:
    """The link secret, then the previous ones still in their grace period (what codes
    and links are checked with); 503 without one."""
    found = st.settings.link_secrets(utcnow())
    if not found:
        raise HTTPException(503, "subscribing on the web is not set up here (no LOA_LINK_SECRET)")
    return found


def _kinds(st: State) -> list[str]:
    return sorted(st.city.kinds)  # config/kinds.yaml: each kind is a topic


def _form_page(request: Request, values: dict[str, Any], errors: dict[str, str],
               status: int = 200) -> HTMLResponse:
    st = web_state(request)
    lang = language_of(request)
    return page(request, "subscribe.html", status, lang=lang, values=values,
                errors=errors, kinds=_kinds(st),
                kind_names={k: st.city.kinds[k].name.get(lang, k) for k in st.city.kinds})


def _message(request: Request, heading: str, text: str, status: int = 200,
             **extra: Any) -> HTMLResponse:
    return page(request, "subscribe_message.html", status, lang=language_of(request),
                heading=heading, text=text, **extra)


async def _send(st: State, message: DeliveryRequest) -> None:
    try:
        await queue_delivery(st.redis, st.keys, message, st.producer.send)
    except BrokerUnavailable as exc:
        raise HTTPException(503, "the message could not be sent just now; please try again "
                                 "in a minute") from exc


@subscribe.get("", response_class=HTMLResponse)
async def form(request: Request) -> HTMLResponse:
    """The empty form (everything, in the page's language)."""
    lang = language_of(request)
    return _form_page(request, {"language": lang, "areas": [], "topics": [ALL_TOPICS]}, {})


@subscribe.post("", response_class=HTMLResponse)
async def submit(request: Request) -> Response:
    """Record the request as pending and send what confirms it; on a problem the form
    comes back filled in, each field with its message."""
    posted = await request.form()
    check_csrf(request, str(posted.get("csrf", "")))
    await rate_limit(request, PUBLIC_FORM)
    st, _ = web_state(request), words_of(request)
    secret = _secret(st)
    values: dict[str, Any] = {
        "phone": str(posted.get("phone", ""))[:40], "email": str(posted.get("email", ""))[:254],
        "language": st.city.languages.find(str(posted.get("language", "")))
        or str(posted.get("language", "")) or language_of(request),
        "areas": [str(a) for a in posted.getlist("areas")][:50],
        "topics": [str(t) for t in posted.getlist("topics")][:50],
        "drills": posted.get("drills") == "1"}

    def asked(phone: str) -> tuple[Subscriber | None, dict[str, str]]:
        return optin.requested_subscriber(
            phone, values["email"], values["language"], values["areas"], values["topics"],
            st.city.areas, _kinds(st), st.city.languages.tags, st.settings.phone_region,
            drills=values["drills"], _=_)

    wanted, errors = asked(values["phone"])
    if wanted is None or errors:
        return _form_page(request, values, errors, 422)
    for contact in (wanted.phone, wanted.email):
        if contact:
            await rate_limit(request, PER_CONTACT, who=contact.lower())
    phone, email = wanted.phone, wanted.email
    if phone and await queries.has_opted_out(st.redis, st.keys, "sms", phone):
        # No code can reach a number that sent STOP. It gets the answer any number gets
        # (whether a number sent STOP is not the form's to tell), and its code never comes.
        wanted = asked("")[0] if email else None
        await _unsent_code(st, secret, "join", phone)
    request.session.pop(JOIN_EMAIL, None)
    if wanted is not None:
        await _request_and_send(st, wanted, secret)
    if email:
        request.session[JOIN_EMAIL] = email
    if phone:
        request.session[JOIN_PHONE] = phone
        return RedirectResponse(f"/subscribe/verify?lang={language_of(request)}", status_code=303)
    return _message(request, _("Check your email"),
                    _("We sent a confirmation link to {email}. You receive nothing until you "
                      "confirm.").format(email=email))


async def _unsent_code(st: State, secret: str, purpose: proofs.Purpose, phone: str) -> None:
    """A code for a number that is sent none (one that sent STOP, or is not subscribed):
    typing a guess then answers as for any number ("wrong code, N tries left"), not "no code
    here", which would tell who subscribed. It names no subscriber: even guessed, it does
    nothing."""
    await proofs.issue_code(st.redis, st.keys, secret, purpose, phone, "", time.time())


async def _request_and_send(st: State, wanted: Subscriber, secret: str) -> None:
    """Keep the request as pending, and send each contact what confirms it: the email its
    link, the phone its code."""
    request_ = await optin.request_subscription(st.redis, st.keys, wanted, utcnow())
    wanted = request_.subscriber
    if wanted.email:
        await _send_confirm_link(st, wanted, request_.email_nonce, secret)
    if wanted.phone:
        code = await proofs.issue_code(st.redis, st.keys, secret, "join", wanted.phone,
                                      wanted.id, time.time())
        await _send(st, optin.message("sms", wanted.phone,
                                      optin.code_sms(code, "join", _in(st, wanted.language)),
                                      wanted.language))


async def _send_confirm_link(st: State, sub: Subscriber, nonce: str, secret: str) -> None:
    assert sub.email
    claims = proofs.ConfirmClaims(sub.id, sub.email, nonce, utcnow() + proofs.LINK_TTL)
    link = (f"{st.settings.web_url()}/subscribe/confirm/{proofs.sign_confirm(secret, claims)}"
            f"?lang={sub.language}")
    names = [st.city.areas[a].name_in(sub.language) for a in sub.areas if a in st.city.areas]
    subject, text = optin.confirm_email(link, names, _in(st, sub.language))
    await _send(st, optin.message("email", sub.email, text, sub.language, subject))


def _code_page(request: Request, leaving: bool, errors: dict[str, str] | None = None,
               status: int = 200) -> Response:
    phone = request.session.get(LEAVE_PHONE if leaving else JOIN_PHONE)
    if not phone:
        return RedirectResponse(f"/subscribe{'/leave' if leaving else ''}?lang="
                                f"{language_of(request)}", status_code=303)
    return page(request, "subscribe_verify.html", status, lang=language_of(request), phone=phone,
                leaving=leaving, errors=errors or {},
                email=None if leaving else request.session.get(JOIN_EMAIL))


def _in(st: State, language: str) -> Callable[[str], str]:
    """A subscriber's words: their language's catalog (for what is sent to them)."""
    return st.city.catalogs.of(language).gettext


def _code_problem(check: proofs.CodeCheck, _: Callable[[str], str]) -> str:
    if check.outcome == "wrong":
        return _("Wrong code; {tries} tries left.").format(tries=check.tries_left)
    return _("The code has expired or had too many wrong tries; please start again.")


@subscribe.get("/verify", response_class=HTMLResponse)
async def verify_form(request: Request) -> Response:
    """Where the code sent by SMS is typed."""
    return _code_page(request, leaving=False)


@subscribe.post("/verify", response_class=HTMLResponse)
async def verify(request: Request) -> Response:
    """The right code makes the phone's subscription active."""
    return await _redeem(request, leaving=False)


async def _redeem(request: Request, leaving: bool) -> Response:
    posted = await request.form()
    check_csrf(request, str(posted.get("csrf", "")))
    await rate_limit(request, PUBLIC_FORM)
    st, _ = web_state(request), words_of(request)
    secrets = _verifying(st)
    phone = request.session.get(LEAVE_PHONE if leaving else JOIN_PHONE)
    if not phone:
        return _code_page(request, leaving)
    check, sub_id = await proofs.redeem_code(st.redis, st.keys, secrets,
                                            "leave" if leaving else "join", str(phone),
                                            str(posted.get("code", ""))[:20], time.time())
    done = None
    if check.outcome == "ok" and leaving:
        done = await optin.leave(st.redis, st.keys, sub_id, "sms code", utcnow())
    elif check.outcome == "ok":
        done = await optin.confirm_contact(st.redis, st.keys, sub_id, "sms", utcnow())
    if done is None:
        problem = (_code_problem(check, _) if check.outcome != "ok" else
                   _("The request has expired; please start again."))
        return _code_page(request, leaving, {"code": problem}, 422)
    for name in (LEAVE_PHONE,) if leaving else (JOIN_PHONE, JOIN_EMAIL):
        request.session.pop(name, None)
    if leaving:
        return _message(request, _("Unsubscribed"),
                        _("{phone} will receive no more Loa updates.").format(phone=phone))
    return _message(request, _("Confirmed"), _confirmed_text(st, done, _))


def _confirmed_text(st: State, sub: Subscriber, _: Callable[[str], str]) -> str:
    names = ", ".join(st.city.areas[a].name_in(sub.language) for a in sub.areas
                      if a in st.city.areas)
    return _("You will receive official updates about {areas} by {channels}.").format(
        areas=names, channels=", ".join(sub.channels))


def _claims(request: Request, token: str) -> proofs.ConfirmClaims | Response:
    try:
        return proofs.verify_confirm(_verifying(web_state(request)), token, utcnow())
    except proofs.InvalidConfirmLink:
        _ = words_of(request)
        return _message(request, _("Invalid link"), _("This link cannot be used."), 400,
                        again=True)


@subscribe.get("/confirm/{token}", response_class=HTMLResponse)
async def confirm_form(token: str, request: Request) -> Response:
    """Ask before confirming (mail scanners follow GET links)."""
    claims = _claims(request, token)
    if isinstance(claims, Response):
        return claims
    return page(request, "subscribe_confirm.html", lang=language_of(request), email=claims.email,
                token=token)


@subscribe.post("/confirm/{token}", response_class=HTMLResponse)
async def confirm(token: str, request: Request) -> Response:
    """The email's owner confirms: the subscription becomes active on email."""
    posted = await request.form()
    check_csrf(request, str(posted.get("csrf", "")))
    claims = _claims(request, token)
    if isinstance(claims, Response):
        return claims
    st, _ = web_state(request), words_of(request)
    done = await optin.confirm_contact(st.redis, st.keys, claims.subscriber_id, "email",
                                       utcnow(), nonce=claims.nonce)
    if done is not None:
        return _message(request, _("Confirmed"), _confirmed_text(st, done, _))
    current = await optin.find_by_id(st.redis, st.keys, claims.subscriber_id)
    if (current is not None and current.status == "active" and "email" in current.channels
            and current.email == claims.email):
        return _message(request, _("Confirmed"), _("This address is already confirmed."))
    return _message(request, _("Link no longer valid"),
                    _("This request has expired or a newer one replaced it."), 400, again=True)


@subscribe.get("/leave", response_class=HTMLResponse)
async def leave_form(request: Request) -> HTMLResponse:
    """Stop receiving updates: a phone or an email."""
    return page(request, "subscribe_leave.html", lang=language_of(request), values={}, errors={})


@subscribe.post("/leave", response_class=HTMLResponse)
async def leave_submit(request: Request) -> Response:
    """An email gets its unsubscribe link; a phone a code. The answer is the same whether
    or not the contact is subscribed (the form tells nobody who is)."""
    posted = await request.form()
    check_csrf(request, str(posted.get("csrf", "")))
    await rate_limit(request, PUBLIC_FORM)
    st, _ = web_state(request), words_of(request)
    secret = _secret(st)
    typed = str(posted.get("contact", ""))[:254]
    try:
        channel, contact = optin.parse_contact(typed, st.settings.phone_region)
    except InvalidContact:
        return page(request, "subscribe_leave.html", 422, lang=language_of(request),
                    values={"contact": typed},
                    errors={"contact": _("Give a valid phone number or email address.")})
    await rate_limit(request, PER_CONTACT, who=contact.lower())
    sub = await optin.existing_subscriber(st.redis, st.keys,
                                          contact if channel == "sms" else None,
                                          contact if channel == "email" else None)
    known = sub is not None and sub.status != "opted_out" and sub.contact(channel) == contact
    if channel == "sms":
        if known and sub is not None:
            code = await proofs.issue_code(st.redis, st.keys, secret, "leave", contact, sub.id,
                                          time.time())
            await _send(st, optin.message("sms", contact, optin.code_sms(code, "leave",
                                                                         _in(st, sub.language)),
                                          sub.language))
        else:
            await _unsent_code(st, secret, "leave", contact)
        request.session[LEAVE_PHONE] = contact
        return RedirectResponse(f"/subscribe/leave/verify?lang={language_of(request)}",
                                status_code=303)
    if known and sub is not None:
        link = f"{st.settings.web_url()}/unsubscribe/{unsubscribe_token(secret, sub.id)}"
        subject, text = optin.leave_email(f"{link}?lang={sub.language}",
                                          _in(st, sub.language))
        await _send(st, optin.message("email", contact, text, sub.language, subject))
    return _message(request, _("Check your email"),
                    _("If {contact} receives Loa updates, we sent it a link to "
                      "unsubscribe.").format(contact=contact))


@subscribe.get("/leave/verify", response_class=HTMLResponse)
async def leave_verify_form(request: Request) -> Response:
    """Where the code to leave is typed."""
    return _code_page(request, leaving=True)


@subscribe.post("/leave/verify", response_class=HTMLResponse)
async def leave_verify(request: Request) -> Response:
    """The right code unsubscribes the phone."""
    return await _redeem(request, leaving=True)
