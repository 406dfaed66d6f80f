"""An approved statement becomes one delivery per (subscriber, channel): in the subscriber's
language (else the fallback order), with a deterministic id, so a replay or a restart
creates nothing twice.

The audience is fixed in Redis (a bitmap of subscriber numbers) when the fan-out starts
and cut into chunks; each chunk
becomes one batch per channel, recorded in the dispatch ledger (``dispatch.ledger``)
before its event goes on the broker. A fan-out cut off anywhere resumes from the ledger.

The first chunk's batches may be handed over at once, beside the publication, rather than
after a hop through their lane (`start`): they are in the ledger all the same, so one cut
off is finished by the recovery round (``dispatch.recovery``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coordinator import observability as obs
from coordinator import topics
from coordinator.dispatch.audience import queue_audience
from coordinator.dispatch.cut_lock import Hold, as_holder
from coordinator.dispatch.ledger import (
    lock_and_read,
    queue_chunk,
    queue_cut_through,
    queue_open,
    queue_resolved,
    release_lock,
    settle,
)
from coordinator.events import DeliveryBatch, DeliveryRequest, RenderedText, Statement
from coordinator.languages import Languages
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import set_bits
from coordinator.subscribers.unsubscribe import unsubscribe_token

log = obs.get_logger("fanout")
CHANNELS = ("sms", "email")
WINDOW = 4096
"""Bytes of an audience bitmap read at a time (32,768 subscriber numbers)."""
Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
Start = Callable[[DeliveryBatch, list[int]], Awaitable[None]]
"""How the first chunk's batches (and their subscriber numbers) are handed over, when not
through their lane."""


_cutting: set[tuple[str, str]] = set()  # (holder, statement) being cut here now

Texts = dict[tuple[str, str], RenderedText]
"""A statement's texts by (channel, language)."""


def texts_of(statement: Statement) -> Texts:
    """The statement's texts by (channel, language). Pure."""
    return {(t.channel, t.language): t for t in statement.texts}


def text_for(texts: Texts, channel: str, order: tuple[str, ...]) -> RenderedText | None:
    """A statement's text (`texts`: :func:`texts_of` it, made once for many readers) on a
    channel in the first language of `order` it has (a reader's language, then its
    fallbacks: ``Languages.order``). Pure."""
    return next((texts[(channel, lang)] for lang in order if (channel, lang) in texts), None)


def unsubscribe_url(rt: Runtime, sub: Subscriber) -> str | None:
    """The one-click leaving link of an email to `sub` (None without a link secret)."""
    secret = rt.settings.link_secret
    if secret is None:
        return None
    token = unsubscribe_token(secret.get_secret_value(), sub.id)
    # in the subscriber's language: the page that asks and answers is in it
    return f"{rt.settings.web_url()}/unsubscribe/{token}?lang={sub.language}"


def deliveries_for(statement: Statement, sub: Subscriber, link: str, languages: Languages,
                   unsubscribe_url: str | None = None, only: str | None = None,
                   texts: Texts | None = None) -> list[DeliveryRequest]:
    """What one subscriber gets of a statement (`only` on that channel; `texts`:
    :func:`texts_of` the statement, for many subscribers). Pure."""
    out = []
    order = languages.order(sub.language)
    texts = texts_of(statement) if texts is None else texts
    for channel in sub.channels:
        if only is not None and channel != only:
            continue
        text = text_for(texts, channel, order)
        if text is None:
            continue
        query = languages.query(text.language)  # the page in the text's language
        page = f"{link}?lang={query}" if query else link
        body = text.body if channel == "sms" else f"{text.body}\n\n{page}"
        out.append(DeliveryRequest(
            id=f"{statement.id}:{channel}:{sub.id}", channel=channel,
            recipient=sub.contact(channel), text=body, subject=text.title,
            language=text.language, purpose="statement", incident_id=statement.incident_id,
            statement_id=statement.id, subscriber_id=sub.id,
            unsubscribe_url=unsubscribe_url if channel == "email" else None))
    return out


async def fan_out(rt: Runtime, statement: Statement, send: Send,
                  start: Start | None = None) -> int | None:
    """Cut the statement's audience into batches of about `LOA_DISPATCH_BATCH_SIZE` and put
    each on its channel's lane (the first chunk's batches to `start` instead, when given);
    how many deliveries this call targeted: 0 when all is cut already, or another process
    is cutting it now; None when another process holds the right to cut it but has not
    started (it may have died), or this process is cutting it already: the caller keeps
    the statement, to try again later.
    Interrupted, it resumes from the ledger's cursor.

    A fresh fan-out's first batches are on their way after five round trips: the lock, the
    ledger and the holder's heartbeat; the audience fixed and counted; the first chunk;
    the channels of its subscribers; the first chunk recorded. Each write of the cutting
    is made as the lock's holder (``cut_lock``): checked under WATCH (three round trips
    more) once the hold is no longer sure, so that two cutters never count a chunk twice."""
    cutter = (rt.holder, statement.id)
    if cutter in _cutting:
        # This process cuts it already (a recovery round while that cutter waits for the
        # broker): the lock names both alike, and two cutters would count chunks twice.
        return None
    _cutting.add(cutter)
    try:
        return await _fan_out(rt, statement, send, start)
    finally:
        _cutting.discard(cutter)


async def _fan_out(rt: Runtime, statement: Statement, send: Send, start: Start | None
                   ) -> int | None:
    keys, sid, chunk = rt.keys, statement.id, rt.settings.dispatch_batch_size
    holder = rt.holder
    asked_at = time.monotonic()
    taken, ledger, heartbeat_ms = await lock_and_read(rt.redis, keys, sid, holder)
    if not taken:
        return 0 if ledger.started_at else None
    hold = Hold.taken(holder, heartbeat_ms, asked_at)
    try:
        if ledger.queued_all:
            return 0
        resolved = None
        if not ledger.resolved and not ledger.withdrawn_at:
            # Refused to a cutter that stalled: another resolved or finished it meanwhile.
            replies = await as_holder(rt, sid, hold, lambda pipe: _queue_resolution(
                rt, statement, pipe), lambda held, row: hold.refuses(held) or bool(
                    {"resolved", "finished_at"} & row.keys()))
            if replies is None:
                return None  # kept, tried again later
            resolved = int(replies[-1])
        targeted, through = await _cut(rt, statement, send, start, _Place(
            ledger.cursor if resolved is None else 0, ledger.chunks if resolved is None else 0,
            resolved, bool(ledger.withdrawn_at), hold), chunk)
        # Else the worker that took the lock over goes on cutting.
        if through and await as_holder(
                rt, sid, hold, lambda pipe: queue_cut_through(pipe, keys, sid),
                lambda held, row: hold.refuses(held) or "finished_at" in row) is not None:
            await settle(rt.redis, keys, sid, time.time())
        return targeted
    finally:
        await release_lock(rt.redis, keys, sid, holder)


@dataclass
class _Place:
    """Where a fan-out's cutting starts: the bit to cut from and the chunk's number; the
    audience's size when it was just resolved (recorded with the first chunk), whether the
    ledger just read says it was withdrawn, and the cutter's hold of the lock."""

    cursor: int
    number: int
    resolved: int | None
    withdrawn: bool
    hold: Hold


async def _cut(rt: Runtime, statement: Statement, send: Send, start: Start | None,
               place: _Place, chunk: int) -> tuple[int, bool]:
    """Cut chunks from the audience until it is through (the cursor -1) or the statement is
    withdrawn; each chunk is recorded, then its batches are sent (the first chunk's to
    `start`, when given). How many deliveries it targeted, and False when it stopped
    because another worker took the lock over."""
    keys, sid, targeted = rt.keys, statement.id, 0
    audience = keys.dispatch_audience(sid)
    cursor, number, resolved, withdrawn = (place.cursor, place.number, place.resolved,
                                           place.withdrawn)
    while cursor >= 0:
        if withdrawn:
            return targeted, True
        numbers, cursor = await next_chunk(rt.redis, audience, cursor, chunk)
        batches = await _by_channel(rt, numbers)
        if not await _record_chunk(rt, statement, place.hold, number, cursor, batches,
                                   resolved, start is not None):
            log.warning("fan-out taken over by another worker; this one stops cutting it",
                        statement=sid, chunk=number)
            return targeted, False
        for channel, members in batches.items():
            batch = DeliveryBatch(statement_id=sid, channel=channel,  # type: ignore[arg-type]
                                  incident_id=statement.incident_id, number=number)
            await (send_batch(send, batch) if start is None else start(batch, members))
        start, resolved = None, None  # the rest through the lanes: every worker takes a share
        targeted += sum(len(b) for b in batches.values())
        number += 1
        if cursor >= 0:
            withdrawn = bool(await rt.redis.hexists(keys.dispatch(sid), "withdrawn_at"))
    return targeted, True


async def _record_chunk(rt: Runtime, statement: Statement, hold: Hold, number: int,
                        cursor: int, batches: dict[str, list[int]], resolved: int | None,
                        at_once: bool) -> bool:
    """Record chunk `number` (and the cursor after it) in one transaction, as the lock's
    holder (``cut_lock.as_holder``): refused when the lock is another's, or the ledger
    moved on meanwhile (another holder cut on, or through: its chunks would be counted
    twice, and the fan-out never finish). False when refused."""
    keys, sid = rt.keys, statement.id

    def queue(pipe: Pipeline) -> None:
        if resolved is not None:  # the audience is complete: chunks are cut from it
            queue_resolved(pipe, keys, sid, resolved, time.time())
        queue_chunk(pipe, keys, sid, number, cursor, batches, time.time(), statement.incident_id)
        if at_once and batches:  # the recovery round knows whose they are
            pipe.hset(keys.dispatch(sid), "at_once", f"{number}|{hold.holder}")

    # A fresh resolution's first chunk finds `chunks` unset: the resolution is recorded
    # with it, and another cutter's resolution is refused while this one's stands.
    return await as_holder(rt, sid, hold, queue, lambda held, row: hold.refuses(held) or (
        "queued_all" in row or int(row.get("chunks", 0)) != number)) is not None


def _queue_resolution(rt: Runtime, statement: Statement, pipe: Pipeline) -> None:
    """Inside MULTI: the fan-out opened and its audience fixed in its bitmap. An update,
    correction or all-clear also reaches everyone the incident's earlier statements
    reached, wherever its area now is."""
    keys, sid = rt.keys, statement.id
    earlier = keys.incident_reached(statement.incident_id) if statement.references else None
    queue_open(pipe, keys, sid, time.time())
    queue_audience(pipe, keys, rt.city, statement.area, statement.kind,
                   keys.dispatch_audience(sid), statement.exercise, statement.drill_list,
                   earlier)
    pipe.bitcount(keys.dispatch_audience(sid))  # the last reply: the audience's size


async def next_chunk(redis: Redis, key: str, cursor: int, count: int) -> tuple[list[int], int]:
    """Up to `count` subscriber numbers set in the bitmap `key` from bit `cursor` on, and
    the bit to go on from (-1: the end). The bitmap is read :data:`WINDOW` bytes at a time;
    BITPOS skips what is empty after a window with nothing set. A window shorter than
    asked for is the bitmap's end: an audience within one window takes one read."""
    found: list[int] = []
    while len(found) < count:
        start = cursor // 8
        raw = await redis.execute_command("GETRANGE", key, start, start + WINDOW - 1,
                                          NEVER_DECODE=True) or b""
        bits = [b for b in set_bits(raw, start * 8) if b >= cursor]
        wanted = count - len(found)
        found += bits[:wanted]
        if len(bits) > wanted:
            return found, found[-1] + 1
        if len(raw) < WINDOW:
            return found, -1
        cursor = (start + WINDOW) * 8
        if not bits:  # an empty stretch: on to the next bit set, if any
            cursor = int(await redis.bitpos(key, 1, cursor, -1, "BIT"))
            if cursor < 0:
                return found, -1
    return found, cursor


async def _by_channel(rt: Runtime, numbers: list[int]) -> dict[str, list[int]]:
    """The chunk's subscribers per channel they receive on (from the registry's channel
    bitmaps: no subscriber record is read to cut a chunk)."""
    if not numbers:
        return {}
    asks = [a for n in numbers for a in ("GET", "u1", n)]
    async with rt.redis.pipeline(transaction=False) as pipe:
        for channel in CHANNELS:
            pipe.execute_command("BITFIELD_RO", rt.keys.subs_bits("channel", channel), *asks)
        found = await pipe.execute()
    batches = {channel: [n for n, on in zip(numbers, hits, strict=True) if on]
               for channel, hits in zip(CHANNELS, found, strict=True)}
    return {channel: members for channel, members in batches.items() if members}


def batch_lane(batch: DeliveryBatch) -> tuple[topics.TopicSpec, str]:
    """The topic a batch's event goes on, and its key. Pure."""
    spec = topics.DISPATCH_SMS if batch.channel == "sms" else topics.DISPATCH_EMAIL
    return spec, f"{batch.statement_id}:{batch.number}"


async def send_batch(send: Send, batch: DeliveryBatch) -> None:
    """Put a batch's event on its channel's lane."""
    spec, key = batch_lane(batch)
    await send(spec, key, batch.to_bytes())
