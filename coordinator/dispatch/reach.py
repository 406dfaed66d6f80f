"""How far a draft would go and what its SMS would cost, shown to the approver before they
approve: the audience per channel and the SMS segments, counted inside Redis (the same
audience as the fan-out's, ``dispatch.audience``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from channels.segments import segment_count
from coordinator.city import City
from coordinator.dispatch.audience import queue_audience
from coordinator.events import RenderedText
from coordinator.keys import Keys
from coordinator.languages import Languages
from coordinator.state import Redis


@dataclass(frozen=True)
class Reach:
    """Subscribers a draft would reach by SMS and by email, and the SMS segments it costs."""

    sms: int
    email: int
    sms_segments: int

    def to_json(self) -> str:
        """Kept on the approval request (field `reach`). Pure."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | None) -> Reach | None:
        """The reach kept on an approval request, if any. Pure."""
        return cls(**json.loads(raw)) if raw else None

    def line(self) -> str:
        """In plain words. Pure."""
        return (f"SMS to {self.sms:,} ({self.sms_segments:,} segments), "
                f"email to {self.email:,}")


def sms_segments(texts: Sequence[RenderedText], by_language: dict[str, int], total: int,
                 languages: Languages) -> int:
    """Segments for `total` SMS subscribers, `by_language` of them counted per language: each
    gets their language's SMS text, else the fallback order's (as ``dispatch.fanout``); the
    rest (a language no longer declared) are counted as the city's own language. Pure."""
    sms = {t.language: t.body for t in texts if t.channel == "sms"}

    def cost(language: str) -> int:
        found = languages.best(language, list(sms))
        return segment_count(sms[found]) if found else 0

    counted = sum(by_language.values())
    others = max(0, total - counted)
    return (sum(n * cost(lang) for lang, n in by_language.items())
            + others * cost(languages.default))


async def reach_of(redis: Redis, keys: Keys, city: City, area: str, kind: str,
                   texts: Sequence[RenderedText], exercise: bool = False,
                   drill_list: str | None = None, earlier: str | None = None) -> Reach:
    """Count the audience of (area, kind) per channel, and per language for SMS (of a
    drill: its drill audience; of an update: with those reached before): one transaction,
    which also deletes the bitmaps it made."""
    tag = uuid.uuid4().hex
    key, sms_key, both = (keys.subs_bits("tmp", f"{tag}:{p}") for p in ("reach", "sms", "lang"))
    languages = city.languages.tags
    async with redis.pipeline(transaction=True) as pipe:
        queue_audience(pipe, keys, city, area, kind, key, exercise, drill_list, earlier)
        pipe.bitop("AND", sms_key, key, keys.subs_bits("channel", "sms"))
        pipe.bitop("AND", key, key, keys.subs_bits("channel", "email"))
        pipe.bitcount(sms_key)
        pipe.bitcount(key)
        for lang in languages:
            pipe.bitop("AND", both, sms_key, keys.subs_bits("lang", lang))
            pipe.bitcount(both)
        pipe.delete(key, sms_key, both)
        replies = await pipe.execute()
    sms, email, *steps = replies[-(3 + 2 * len(languages)):-1]
    counts = dict(zip(languages, (int(n) for n in steps[1::2]), strict=True))
    return Reach(int(sms), int(email),
                 sms_segments(texts, counts, int(sms), city.languages))


async def record_with_reach(redis: Redis, keys: Keys, city: City, approval_id: str,
                            incident_id: str, draft_id: str
                            ) -> tuple[dict[str, str], Reach | None]:
    """An approval request's record (its hash), once its draft's reach is counted and kept
    on it (once: a replay keeps the first count). The reach is None when the draft or the
    incident is gone; the record is read before the reach is added to it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.approval(approval_id))
        pipe.get(keys.draft(draft_id))
        pipe.hmget(keys.incident(incident_id), ["area", "kind", "exercise", "drill_list"])
        record, draft, (area, kind, exercise, drill_list) = await pipe.execute()
    if record.get("reach"):
        return record, Reach.from_json(record["reach"])
    if draft is None or area is None or kind is None:
        return record, None
    stored = json.loads(draft)
    texts = [RenderedText.model_validate(t) for t in stored["texts"]]
    earlier = keys.incident_reached(incident_id) if stored.get("references") else None
    reach = await reach_of(redis, keys, city, area, kind, texts, exercise == "1",
                           drill_list or None, earlier)
    await redis.hsetnx(keys.approval(approval_id), "reach", reach.to_json())
    return record, reach
