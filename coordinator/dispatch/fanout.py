"""An approved statement becomes one delivery per (subscriber, channel): in the subscriber's
language (else the fallback order), with a deterministic id, so a replay or a restart
creates nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from coordinator import topics
from coordinator.dispatch.audience import audience_key
from coordinator.events import DeliveryRequest, RenderedText, Statement
from coordinator.runtime import Runtime
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.unsubscribe import unsubscribe_token

FALLBACK_LANGUAGES = ("vi", "en")
Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]


def text_for(statement: Statement, channel: str, language: str) -> RenderedText | None:
    """The statement's text on a channel in a language, else in the fallback order. Pure."""
    texts: dict[tuple[str, str], RenderedText] = {(t.channel, t.language): t
                                                  for t in statement.texts}
    for lang in (language, *FALLBACK_LANGUAGES):
        if (channel, lang) in texts:
            return texts[(channel, lang)]
    return None


def deliveries_for(statement: Statement, sub: Subscriber, link: str,
                   unsubscribe_url: str | None = None) -> list[DeliveryRequest]:
    """What one subscriber gets of a statement. Pure."""
    out = []
    for channel in sub.channels:
        text = text_for(statement, channel, sub.language)
        if text is None:
            continue
        body = text.body if channel == "sms" else f"{text.body}\n\n{link}"
        out.append(DeliveryRequest(
            id=f"{statement.id}:{channel}:{sub.id}", channel=channel,
            recipient=sub.contact(channel), text=body, subject=text.title,
            language=text.language, purpose="statement", incident_id=statement.incident_id,
            statement_id=statement.id, subscriber_id=sub.id,
            unsubscribe_url=unsubscribe_url if channel == "email" else None))
    return out


async def fan_out(rt: Runtime, statement: Statement, send: Send, batch: int = 500) -> int:
    """Queue every delivery of a statement once; returns how many (0 when already done).
    Interrupted, it runs again in full: the delivery ids make the repeats no-ops."""
    if await rt.redis.hget(rt.keys.dispatch(statement.id), "queued_all"):
        return 0
    key, size = await audience_key(rt.redis, rt.keys, rt.city, statement.area, statement.kind)
    link = f"{rt.settings.web_url()}/statements/{statement.id}"
    counts: dict[str, int] = {}
    cursor = 0
    while True:
        cursor, ids = await rt.redis.sscan(key, cursor, count=batch)
        raws = await rt.redis.mget([rt.keys.subscriber(i) for i in ids]) if ids else []
        sends = []
        for raw in raws:
            if raw is None:
                continue
            sub = Subscriber.model_validate_json(raw)
            secret = rt.settings.link_secret
            leave = (f"{rt.settings.web_url()}/unsubscribe/"
                     f"{unsubscribe_token(secret.get_secret_value(), sub.id)}" if secret else None)
            for request in deliveries_for(statement, sub, link, leave):
                spec = (topics.DELIVERIES_SMS if request.channel == "sms"
                        else topics.DELIVERIES_EMAIL)
                sends.append(send(spec, request.id, request.to_bytes()))
                counts[request.channel] = counts.get(request.channel, 0) + 1
        await asyncio.gather(*sends)  # a batch in flight at once; all acknowledged here
        if cursor == 0:
            break
    await rt.redis.delete(key)
    await rt.redis.hset(rt.keys.dispatch(statement.id), mapping={
        "audience": size, "queued_all": "1",
        **{f"targeted:{c}": n for c, n in counts.items()}})
    return sum(counts.values())
