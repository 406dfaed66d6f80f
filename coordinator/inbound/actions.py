"""What an inbound SMS does, each in one Redis transaction with its finishing: the
stored answer and the state it changes happen together, once (a replayed webhook, or a
rerun after a crash, finds the SMS done and changes nothing).

The webhook (``coordinator.web.hooks``) parses, authorizes, calls one of these and renders
the answer; it writes nothing itself.
"""

from __future__ import annotations

from coordinator.events import AuditEvent
from coordinator.inbound.store import finish_inbound, queue_done, still_pending
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, queue_audit, transact
from coordinator.subscribers import store
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.optin import queue_sms_opt_out, subscriber_to_change
from coordinator.subscribers.registry import register


async def answer_only(redis: Redis, keys: Keys, sid: str, answer: str) -> bool:
    """Finish an SMS that changes nothing (HELP, a question, an outcome); True when this
    call finished it."""
    return await finish_inbound(redis, keys, sid, answer)


async def stop_or_start(redis: Redis, keys: Keys, sid: str, phone: str, stop: bool,
                        answer: str, anonymous_actor: str) -> bool:
    """STOP (or START) from `phone`: the SMS opt-out set, the status of the subscriber with
    that phone, the audit entry (by the subscriber's id, else `anonymous_actor`) and the
    finished SMS, in one MULTI. True when this call did it."""
    contact_key = store.contact_key(keys, phone)

    async def body(pipe: Pipeline) -> bool:
        if not await still_pending(pipe, keys, sid):
            return False
        found = await subscriber_to_change(pipe, keys, phone)
        pipe.multi()
        queue_sms_opt_out(pipe, keys, phone, found, stop)
        queue_audit(pipe, keys, AuditEvent(
            actor=found[1].id if found is not None else anonymous_actor,
            action=f"sms.{'stop' if stop else 'start'}", interface="sms",
            detail={"message": sid}))
        queue_done(pipe, keys, sid, answer)
        return True

    return await transact(redis, [keys.inbound_sms(sid), contact_key], body)


async def join_by_sms(redis: Redis, keys: Keys, sid: str, phone: str, areas: list[str],
                      answer: str, language: str) -> Subscriber:
    """JOIN: sign a phone up for SMS updates about `areas` (all topics) in `language`. The
    registry's record first (idempotent: the contact index finds the record this phone
    already has, else it gets a new number and id), then, in one MULTI, the phone leaves the SMS
    opt-out set, the audit entry, and the finished SMS."""
    sub, _ = await register(redis, keys, Subscriber(
        phone=phone, areas=areas, channels=["sms"], language=language,
        consent_source="sms:JOIN"),
        resubscribe=True)

    def effects(pipe: Pipeline) -> None:
        pipe.srem(keys.opted_out("sms"), phone)
        queue_audit(pipe, keys, AuditEvent(actor=sub.id, action="subscriber.joined",
                                           interface="sms", detail={"areas": areas}))

    await finish_inbound(redis, keys, sid, answer, effects)
    return sub


async def refuse_answer(redis: Redis, keys: Keys, sid: str, answer: str, actor: str,
                        verdict: str, why: str) -> bool:
    """An approver's answer refused (unknown number, wrong code, SMS answers off): the
    audit entry and the finished SMS together. No code in the trail: the audit is shown
    to staff, codes to their approver only."""

    def effects(pipe: Pipeline) -> None:
        queue_audit(pipe, keys, AuditEvent(
            actor=actor, action="sms.answer_refused", interface="sms",
            detail={"verdict": verdict, "why": why, "message": sid}))

    return await finish_inbound(redis, keys, sid, answer, effects)
