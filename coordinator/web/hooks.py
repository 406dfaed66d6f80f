"""Twilio webhooks: inbound SMS (approver answers, STOP/START/HELP) and status callbacks.
Every request must carry a valid `X-Twilio-Signature` (403 otherwise)."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, HTTPException, Request, Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from channels.contacts import InvalidContact, e164
from coordinator import topics
from coordinator.approvals.record import ApprovalRecord
from coordinator.dispatch.deliveries import record_status
from coordinator.errors import BrokerUnavailable
from coordinator.events import AuditEvent, Decision, utcnow
from coordinator.inbound.sms_commands import Answer, Join, Keyword, parse_sms
from coordinator.state import Redis, queue_audit
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.registry import save_subscriber, set_status
from coordinator.web.state import State, web_state

hooks = APIRouter(prefix="/hooks/twilio", include_in_schema=False)

HELP = ("Loa - thông tin khẩn cấp chính thức của Hà Nội. Nhắn STOP để ngừng, START để nhận "
        "lại. Khẩn cấp: 113, 114, 115. / Loa: Hanoi's official emergency updates. "
        "Reply STOP to stop, START to resume.")
STOPPED = ("Bạn sẽ không nhận thêm tin nhắn từ Loa. Nhắn START để nhận lại. / You will get "
           "no more messages from Loa. Reply START to resume.")
STARTED = "Bạn đã đăng ký nhận lại tin từ Loa. / You will get Loa messages again."


def twiml(text: str) -> Response:
    """A TwiML answer that replies with `text` (escaped by the SDK's builder)."""
    reply = MessagingResponse()
    reply.message(text)
    return Response(str(reply), media_type="application/xml")


async def verified_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, once its Twilio signature checks out; 403 otherwise."""
    st = web_state(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    token = st.settings.twilio_auth_token
    url = st.settings.web_url().rstrip("/") + request.url.path
    signature = request.headers.get("X-Twilio-Signature", "")
    if token is None or not RequestValidator(token.get_secret_value()).validate(
            url, form, signature):
        raise HTTPException(403, "invalid Twilio signature")
    return form


@hooks.post("/status")
async def status_callback(request: Request) -> Response:
    """A message's status moved on (sent, delivered, undelivered, failed)."""
    form = await verified_form(request)
    st = web_state(request)
    await record_status(st.redis, st.keys, form.get("MessageSid", ""),
                        form.get("MessageStatus", ""), form.get("ErrorCode", ""), utcnow())
    return Response(status_code=204)


@hooks.post("/sms")
async def inbound_sms(request: Request) -> Response:
    """An SMS to our number: a keyword, or an approver answering a prompt."""
    form = await verified_form(request)
    st = web_state(request)
    try:
        phone = e164(form.get("From", ""), st.settings.phone_region)
    except InvalidContact:
        return twiml(HELP)
    command = parse_sms(form.get("Body", ""))
    if isinstance(command, Join):
        return await _join(st, phone, command.areas)
    if isinstance(command, Keyword):
        return await _keyword(st, phone, command.word)
    if isinstance(command, Answer):
        if not command.code:
            if command.verdict == "approve" and await st.redis.sismember(
                    st.keys.opted_out("sms"), phone):
                return await _keyword(st, phone, "start")  # YES with no code = opt back in
            return twiml("Hãy gửi kèm mã, ví dụ YES 4821. / Please include the code, "
                         "e.g. YES 4821.")
        return await _answer(st, phone, command, form.get("MessageSid", ""))
    return twiml(HELP)


async def _keyword(st: State, phone: str, word: str) -> Response:
    redis, keys = st.redis, st.keys
    if word == "help":
        return twiml(HELP)
    async with redis.pipeline(transaction=True) as pipe:
        if word == "stop":
            pipe.sadd(keys.opted_out("sms"), phone)
        else:
            pipe.srem(keys.opted_out("sms"), phone)
        queue_audit(pipe, keys, AuditEvent(actor=phone, action=f"sms.{word}", interface="sms",
                                           detail={"phone": phone}))
        await pipe.execute()
    await set_status(redis, keys, phone, "opted_out" if word == "stop" else "active")
    return twiml(STOPPED if word == "stop" else STARTED)


async def _answer(st: State, phone: str, answer: Answer, message_sid: str) -> Response:
    redis, keys, city = st.redis, st.keys, st.city
    # config/ holds phones in E.164 (checked at load), so the normalised sender compares as is
    person = next((p for p in city.people.values() if p.phone == phone), None)
    matches = []
    for approval_id in sorted(await redis.smembers(keys.reply_code(answer.code))):
        row = await redis.hgetall(keys.approval(approval_id))
        record = ApprovalRecord.from_hash(row) if row else None
        if record and person is not None and person.id in record.eligible:
            matches.append((record.status == "pending", approval_id))
    pending = [a for live, a in matches if live]
    # Codes are 4 digits and may repeat: never guess between two live requests.
    target = pending[0] if len(pending) == 1 else (
        matches[-1][1] if matches and not pending else None)
    if target is None or person is None:
        why = ("unknown number" if person is None else
               "the code matches several of your requests" if len(pending) > 1 else
               "no request of yours has this code")
        async with redis.pipeline(transaction=True) as pipe:
            queue_audit(pipe, keys, AuditEvent(
                actor=phone, action="sms.answer_refused", interface="sms",
                detail={"code": answer.code, "verdict": answer.verdict, "why": why}))
            await pipe.execute()
        return twiml(f"Mã {answer.code} không hợp lệ với số này. / Code {answer.code} is not "
                     "valid for this number.")
    decision = Decision(id=f"sms-{message_sid or time.time_ns()}", approval_id=target,
                        approver_id=person.id, verdict=answer.verdict,  # type: ignore[arg-type]
                        comment=answer.reason, via="sms")
    try:
        await st.producer.send(topics.DECISIONS, target, decision.to_bytes())
    except BrokerUnavailable:
        raise HTTPException(503, "decision not recorded; Twilio will retry") from None
    outcome = await _outcome(redis, keys.decision(decision.id))
    return twiml(outcome or f"Đã nhận trả lời cho {target}. / Answer for {target} received.")


async def _outcome(redis: Redis, key: str, wait_s: float = 8.0) -> str | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        raw = await redis.get(key)
        if raw:
            return str(json.loads(raw)["message"])
        await asyncio.sleep(0.1)
    return None



async def _join(st: State, phone: str, areas: list[str]) -> Response:
    """Sign a phone up for SMS updates about areas (all topics, Vietnamese)."""
    unknown = [a for a in areas if a not in st.city.areas]
    if not areas or unknown:
        return twiml("Gửi JOIN <mã khu vực>, ví dụ JOIN hn-ba-dinh. / Send JOIN <area code>, "
                     f"e.g. JOIN hn-ba-dinh.{' Unknown: ' + ', '.join(unknown) if unknown else ''}")
    sub = Subscriber(phone=phone, areas=areas, channels=["sms"], consent_source="sms:JOIN")
    await save_subscriber(st.redis, st.keys, sub, resubscribe=True)
    await st.redis.srem(st.keys.opted_out("sms"), phone)
    async with st.redis.pipeline(transaction=True) as pipe:
        queue_audit(pipe, st.keys, AuditEvent(actor=phone, action="subscriber.joined",
                                              interface="sms", detail={"areas": areas}))
        await pipe.execute()
    names = ", ".join(st.city.areas[a].name_in("vi") for a in areas)
    return twiml(f"Đã đăng ký nhận tin Loa về {names}. Nhắn STOP để ngừng. / Subscribed to "
                 "Loa updates; reply STOP to stop.")
