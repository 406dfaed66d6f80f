"""Twilio webhooks: inbound SMS (approver answers, STOP/START/HELP/JOIN) and status callbacks.
Every request must carry a valid `X-Twilio-Signature` (403 otherwise).

Each route parses (``channels.twilio_webhooks``: signature, form, TwiML), authorizes, calls
one domain function (``coordinator.inbound``) and renders; it writes nothing itself.

An inbound SMS is stored in Redis under its MessageSid before anything else, then handled
from there: a replayed webhook gets the stored answer and does nothing, and one left
unfinished (broker or Redis trouble midway, a process killed) is finished by
:func:`recover_inbound`. Configure the inbound URL at Twilio with
``channels.twilio_webhooks.RETRY_OVERRIDES`` appended, so that an SMS that could not even
be stored (Redis down: 503) is sent again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from functools import partial
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, Response
from redis.exceptions import RedisError

from channels.contacts import InvalidContact, e164
from channels.twilio_webhooks import (
    InvalidWebhook,
    inbound_text,
    reply_twiml,
    signature_valid,
    status_update,
)
from coordinator import observability as obs
from coordinator import queries
from coordinator.access import Action
from coordinator.approvals.decisions import submit_decision
from coordinator.errors import BrokerUnavailable, ConfigError
from coordinator.events import Decision
from coordinator.inbound.actions import answer_only, join_by_sms, refuse_answer, stop_or_start
from coordinator.inbound.answers import match_answer, not_valid
from coordinator.inbound.sms_commands import Answer, Join, Keyword, parse_sms
from coordinator.inbound.store import (
    InboundSms,
    forget_pending,
    is_done,
    load_pending,
    retry_later,
    stale_inbound,
    store_inbound,
)
from coordinator.outcomes import outcome_of
from coordinator.subscribers.registry import find_subscriber
from coordinator.translations import N_
from coordinator.web.auth import locked_route, locked_router
from coordinator.web.state import State, web_state

hooks = locked_router(Action.provider_webhook, prefix="/hooks/twilio",
                      include_in_schema=False)
log = obs.get_logger("hooks")
MAX_FORM_FIELDS = 1000  # as Starlette's form parser: more is refused (400)

HELP = ("Loa - thông tin khẩn cấp chính thức của Hà Nội. Nhắn STOP để ngừng, START để nhận "
        "lại. Khẩn cấp: 113, 114, 115. / Loa: Hanoi's official emergency updates. "
        "Reply STOP to stop, START to resume.")
STOPPED = ("Bạn sẽ không nhận thêm tin nhắn từ Loa. Nhắn START để nhận lại. / You will get "
           "no more messages from Loa. Reply START to resume.")
STARTED = "Bạn đã đăng ký nhận lại tin từ Loa. / You will get Loa messages again."
RECEIVED = "Loa đã nhận tin nhắn, đang xử lý. / Loa got your message and is on it."
# ... to a subscriber, in their language (the message catalogs)
N_HELP = N_("Loa: Hanoi's official emergency updates. Reply STOP to stop, START to resume. "
            "Emergencies: 113, 114, 115.")
N_STOPPED = N_("You will get no more messages from Loa. Reply START to resume.")
N_STARTED = N_("You will get Loa messages again.")
NEEDS_CODE = ("Hãy gửi kèm mã 6 số trong tin nhắn, ví dụ YES 123456. / Please include the "
              "6-digit code from the message, e.g. YES 123456.")


def twiml(text: str) -> Response:
    """A TwiML answer that replies with `text`."""
    return Response(reply_twiml(text), media_type="application/xml")


def _xml(stored: str) -> Response:
    return Response(stored, media_type="application/xml")


async def verified_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, once its Twilio signature checks out; 403 otherwise. The
    URL signed may or may not carry the retry overrides' fragment: both are accepted."""
    st = web_state(request)
    # Twilio posts application/x-www-form-urlencoded, nothing else: read as such (a body of
    # any other kind reads as fields no signature matches). Blank values are kept, as
    # Twilio signs them.
    try:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"),
                              keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
    except ValueError:  # more fields than any Twilio webhook has
        raise HTTPException(400, f"form: more than {MAX_FORM_FIELDS} fields") from None
    token = st.settings.twilio_auth_token
    url = st.settings.web_url().rstrip("/") + request.url.path
    if not signature_valid(token.get_secret_value() if token is not None else None, url, form,
                           request.headers.get("X-Twilio-Signature", "")):
        raise HTTPException(403, "invalid Twilio signature")
    return form


async def status_callback(request: Request) -> Response:
    """A message's status moved on (sent, delivered, undelivered, failed)."""
    update = status_update(await verified_form(request))
    st = web_state(request)
    await st.status_callbacks.record(update)  # with the others arriving at once
    return Response(status_code=204)


# Two of these come for every SMS of a fan-out: a plain route, under the same lock.
status_route = locked_route(f"{hooks.prefix}/status", Action.provider_webhook,
                            status_callback, "POST")


@hooks.post("/sms")
async def inbound_sms(request: Request) -> Response:
    """An SMS to our number: stored first (503 when it cannot be, for Twilio to retry),
    answered once; the same MessageSid again gets the first answer and changes nothing."""
    form = await verified_form(request)
    st = web_state(request)
    try:
        text = inbound_text(form)
    except InvalidWebhook as exc:
        raise HTTPException(400, str(exc)) from None
    sid = text.sid
    sms = InboundSms(sid, text.sender, text.body, time.time())
    try:
        stored = await store_inbound(st.redis, st.keys, sms)
    except RedisError as exc:
        log.error("inbound SMS not stored; Twilio retries with the URL's overrides",
                  error=repr(exc))
        raise HTTPException(503, "not stored; send again") from None
    if stored is not None:
        return _xml(stored) if stored else twiml(RECEIVED)
    try:
        return await handle_inbound(st, sms)
    except (RedisError, BrokerUnavailable) as exc:
        log.warning("inbound SMS left pending; it is finished later", sid=sid,
                    error=repr(exc))
        return twiml(RECEIVED)


async def handle_inbound(st: State, sms: InboundSms, wait_s: float = 5.0) -> Response:
    """Do what a stored SMS asks, once, and finish it; raises RedisError or
    BrokerUnavailable, leaving it pending. An answer whose decision is on its way (no outcome
    within `wait_s`) stays pending until the outcome is recorded."""
    try:
        phone = e164(sms.sender, st.settings.phone_region)
    except InvalidContact:
        return await _finish(st, sms.sid, twiml(HELP))
    command = parse_sms(sms.body, st.city.languages.join_words)
    if isinstance(command, Join):
        return await _join(st, sms.sid, phone, command.areas,
                           command.language or st.city.languages.default)
    if isinstance(command, Keyword):
        return await _keyword(st, sms.sid, phone, command.word)
    if isinstance(command, Answer):
        if not command.code:
            if command.verdict == "approve" and await queries.has_opted_out(
                    st.redis, st.keys, "sms", phone):
                return await _keyword(st, sms.sid, phone, "start")  # a bare YES: opt back in
            return await _finish(st, sms.sid, twiml(NEEDS_CODE))
        return await _answer(st, sms.sid, phone, command, wait_s)
    return await _finish(st, sms.sid, twiml(HELP))


async def _finish(st: State, sid: str, answer: Response) -> Response:
    """Finish an SMS whose answer changes nothing else; render the answer."""
    await answer_only(st.redis, st.keys, sid, _text(answer))
    return answer


def _text(answer: Response) -> str:
    """The TwiML of an answer, as stored for replays."""
    return bytes(answer.body).decode()


def sender_actor(st: State, phone: str) -> str:
    """How the audit trail names a number that is nobody we know: `sms:` and a keyed hash
    (promise 8: the number itself is for admins and the channel only)."""
    try:
        key = st.settings.key_for("sms-sender")
    except ConfigError:
        return "sms:unknown"
    return "sms:" + hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()[:16]


async def _keyword(st: State, sid: str, phone: str, word: str) -> Response:
    sub = await find_subscriber(st.redis, st.keys, phone)
    language = sub.language if sub is not None else None
    if language and st.city.languages.known(language):  # a subscriber: in their language
        _ = st.city.catalogs.of(language).gettext
        help_text, stopped, started = _(N_HELP), _(N_STOPPED), _(N_STARTED)
    else:  # anyone else (an approver, a stranger): in both staff languages, as before
        help_text, stopped, started = HELP, STOPPED, STARTED
    if word == "help":
        return await _finish(st, sid, twiml(help_text))
    # The registry, the opt-out, the audit entry and the finish in one MULTI: a replay or a
    # rerun after a crash records one STOP.
    stop = word == "stop"
    answer = twiml(stopped if stop else started)
    await stop_or_start(st.redis, st.keys, sid, phone, stop, _text(answer),
                        sender_actor(st, phone))
    return answer


async def _answer(st: State, sid: str, phone: str, answer: Answer, wait_s: float) -> Response:
    # config/ holds phones in E.164 (checked at load), so the normalised sender compares as is
    person = next((p for p in st.city.people.values() if p.phone == phone), None)
    if person is None:
        return await _refuse(st, sid, sender_actor(st, phone), answer, not_valid(answer.code),
                             "unknown number")
    try:
        key = st.settings.key_for("reply-code")
    except ConfigError:
        return await _refuse(st, sid, person.id, answer, "Chưa bật trả lời bằng SMS; hãy dùng "
                             "hộp thư web. / SMS answers are not enabled: please use the web "
                             "inbox.", "LOA_SECRET_KEY is not set")
    match = await match_answer(st.redis, st.keys, key, person.id, answer.code)
    if match.approval_id is None:
        return await _refuse(st, sid, person.id, answer, match.refusal, match.why)
    decision = Decision(id=f"sms-{sid}", approval_id=match.approval_id, approver_id=person.id,
                        verdict=answer.verdict,  # type: ignore[arg-type]
                        comment=answer.reason, via="sms")
    # short: within Twilio's 15 s for the whole answer (what does not fit is finished later)
    await submit_decision(st.redis, st.keys, decision, partial(st.producer.send, timeout_s=5.0))
    found = await outcome_of(st.redis, st.keys, decision.id, wait_s)
    if found is None:  # on its way: finished once the decider recorded it
        return twiml(f"Đã nhận trả lời cho {match.approval_id}. / Answer for "
                     f"{match.approval_id} received.")
    return await _finish(st, sid, twiml(str(found["message"])))


async def _refuse(st: State, sid: str, actor: str, answer: Answer, refusal: str,
                  why: str) -> Response:
    reply = twiml(refusal)
    await refuse_answer(st.redis, st.keys, sid, _text(reply), actor, answer.verdict, why)
    return reply


async def recover_inbound(st: State, older_than_s: float = 10.0) -> int:
    """Finish inbound SMS left pending for longer than `older_than_s`: an answer whose
    decision was recorded meanwhile is closed with its outcome; anything else is handled
    again from Redis (a decision is resent under the same id, so it counts once). Returns
    how many it finished."""
    done = 0
    for sid in await stale_inbound(st.redis, st.keys, older_than_s):
        sms = await load_pending(st.redis, st.keys, sid)
        if sms is None:
            await forget_pending(st.redis, st.keys, sid)
            continue
        outcome = await outcome_of(st.redis, st.keys, f"sms-{sid}", 0)
        # tried again after another `older_than_s`, not on every round
        await retry_later(st.redis, st.keys, sid)
        try:
            if outcome:
                await _finish(st, sid, twiml(str(outcome["message"])))
            else:
                await handle_inbound(st, sms, wait_s=0)
        except (RedisError, BrokerUnavailable) as exc:
            log.warning("inbound SMS still pending", sid=sid, error=repr(exc))
            continue
        if await is_done(st.redis, st.keys, sid):
            done += 1
    return done


async def keep_recovering(st: State, every_s: float = 2.0) -> None:
    """Run :func:`recover_inbound` for as long as the web process runs (also right after a
    restart: what was pending is in Redis)."""
    while True:
        try:
            finished = await recover_inbound(st)
            if finished:
                log.warning("pending inbound SMS finished", count=finished)
        except Exception as exc:  # a passing outage must not end the loop
            log.error("inbound SMS recovery failed", error=repr(exc))
        await asyncio.sleep(every_s)


async def _join(st: State, sid: str, phone: str, areas: list[str], language: str
                ) -> Response:
    """Sign a phone up for SMS updates about areas (all topics), in `language`; the answer
    is in it too."""
    _ = st.city.catalogs.of(language).gettext
    unknown = [a for a in areas if a not in st.city.areas]
    if not areas or unknown:
        told = _(" Unknown: {codes}").format(codes=", ".join(unknown)) if unknown else ""
        return await _finish(st, sid, twiml(
            _("Send SUBSCRIBE <area code>, e.g. SUBSCRIBE hn-ba-dinh.") + told))
    names = ", ".join(st.city.areas[a].name_in(language) for a in areas)
    answer = twiml(_("Subscribed to Loa updates about {areas}; reply STOP to stop.").format(
        areas=names))
    await join_by_sms(st.redis, st.keys, sid, phone, areas, _text(answer), language)
    return answer
