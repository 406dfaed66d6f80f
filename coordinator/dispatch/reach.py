"""How far a draft would go and what its SMS would cost, shown to the approver before they
approve: the audience per channel and the SMS segments, counted inside Redis (the same
audience as the fan-out's, ``dispatch.audience``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from channels.segments import segment_count
from coordinator.city import City
from coordinator.dispatch.audience import queue_audience
from coordinator.events import RenderedText
from coordinator.keys import Keys
from coordinator.languages import Languages
from coordinator.state import Pipeline, Redis, Script


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


def segment_costs(texts: Sequence[RenderedText], languages: Languages
                  ) -> tuple[dict[str, int], int]:
    """What one SMS subscriber costs in segments, per declared language: their language's
    SMS text, else the fallback order's (as ``dispatch.fanout``); 0 when none of the order
    has one. And what a subscriber of a language no longer declared costs: the city's own
    language's. Pure."""
    sms = {t.language: t for t in texts if t.channel == "sms"}

    def cost(language: str) -> int:
        found = languages.best(language, list(sms))
        if found is None:
            return 0
        text = sms[found]
        return text.segments if text.segments is not None else segment_count(text.body)

    return {tag: cost(tag) for tag in languages.tags}, cost(languages.default)


# The audience's steps (BITOP and DEL, as `queue_audience` makes them), then the counts, in
# one call: a request's reach cost a read, a transaction of some twenty commands and a
# write, and was a tenth of a worker's time filing reports. Each SMS subscriber costs their
# language's segments (`segment_costs`); those counted in no declared language, the
# default's. With ARGV[1] = 1 the reach is kept on the request (KEYS[1]) once, and the
# request's fields come back; a request already counted, or gone, is left as it is.
_REACH = Script("""
local keep = ARGV[1] == '1'
if keep then
  if redis.call('HEXISTS', KEYS[1], 'reach') == 1 or redis.call('EXISTS', KEYS[1]) == 0 then
    return {'as_it_was', redis.call('HGETALL', KEYS[1])}
  end
end
local function key(i) return KEYS[tonumber(ARGV[i])] end
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local op, n = ARGV[i], tonumber(ARGV[i + 1])
  local names = {}
  for j = 1, n do names[j] = key(i + 1 + j) end
  if op == 'DEL' then redis.call('DEL', unpack(names))
  else redis.call('BITOP', op, unpack(names)) end
  i = i + 2 + n
end
local into, sms_part, scratch = key(i), key(i + 1), key(i + 2)
redis.call('BITOP', 'AND', sms_part, into, key(i + 3))
redis.call('BITOP', 'AND', into, into, key(i + 4))
local sms, email = redis.call('BITCOUNT', sms_part), redis.call('BITCOUNT', into)
local languages = tonumber(ARGV[i + 5])
i = i + 6
local counted, segments = 0, 0
for _ = 1, languages do
  redis.call('BITOP', 'AND', scratch, sms_part, key(i))
  local n = redis.call('BITCOUNT', scratch)
  counted = counted + n
  segments = segments + n * tonumber(ARGV[i + 1])
  i = i + 2
end
segments = segments + math.max(0, sms - counted) * tonumber(ARGV[i])
redis.call('DEL', into, sms_part, scratch)
if not keep then return {'counted', sms, email, segments} end
redis.call('HSET', KEYS[1], 'reach', '{"sms": ' .. sms .. ', "email": ' .. email ..
           ', "sms_segments": ' .. segments .. '}')
return {'counted', redis.call('HGETALL', KEYS[1])}
""")


class _Steps:
    """What `queue_audience` queues (BITOP and DEL), kept to be run by `_REACH`."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, list[str]]] = []

    def bitop(self, op: str, dest: str, *sources: str) -> None:
        self.steps.append((op, [dest, *sources]))

    def delete(self, *names: str) -> None:
        self.steps.append(("DEL", list(names)))


@dataclass(frozen=True)
class ReachInputs:
    """What a draft's reach depends on: its incident's place, kind and drill, its SMS
    texts, and whether it updates an earlier statement (whose readers it also reaches)."""

    incident_id: str
    area: str
    kind: str
    texts: Sequence[RenderedText]
    exercise: bool = False
    drill_list: str | None = None
    updates_earlier: bool = False


def _call(keys: Keys, city: City, inputs: ReachInputs, keep_on: str | None
          ) -> tuple[list[str], list[Any]]:
    """The keys and arguments of `_REACH` for `inputs`; kept on the request `keep_on`, when
    given. Pure."""
    tag = uuid.uuid4().hex
    into, sms_part, scratch = (keys.subs_bits("tmp", f"{tag}:{p}")
                               for p in ("reach", "sms", "lang"))
    earlier = keys.incident_reached(inputs.incident_id) if inputs.updates_earlier else None
    steps = _Steps()
    queue_audience(steps, keys, city, inputs.area, inputs.kind, into, inputs.exercise,
                   inputs.drill_list, earlier)
    names: dict[str, int] = {keep_on or into: 1}

    def index(name: str) -> int:
        return names.setdefault(name, len(names) + 1)

    args: list[Any] = ["1" if keep_on else "0", len(steps.steps)]
    for op, step_keys in steps.steps:
        args += [op, len(step_keys), *(index(k) for k in step_keys)]
    costs, default_cost = segment_costs(inputs.texts, city.languages)
    args += [index(into), index(sms_part), index(scratch),
             index(keys.subs_bits("channel", "sms")), index(keys.subs_bits("channel", "email")),
             len(costs)]
    for language, cost in costs.items():
        args += [index(keys.subs_bits("lang", language)), cost]
    args.append(default_cost)
    return list(names), args


def queue_reach_kept(pipe: Pipeline, keys: Keys, city: City, approval_id: str,
                     inputs: ReachInputs) -> None:
    """Inside the MULTI that writes the request `approval_id`, after it: count its draft's
    reach and keep it on the request, whose record (with its reach) the EXEC returns
    (:func:`kept_record`). A Redis that lost the script (restarted since this process
    loaded it) fails this one command with NoScriptError, after the rest is written."""
    _REACH.queue(pipe, *_call(keys, city, inputs, keys.approval(approval_id)))


def kept_record(reply: list[Any]) -> dict[str, str]:
    """The request's record, from `_REACH`'s reply when it keeps the reach. Pure."""
    _, flat = reply
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def reach_of(redis: Redis, keys: Keys, city: City, inputs: ReachInputs) -> Reach:
    """Count the audience of a draft per channel, and its SMS segments per language (of a
    drill: its drill audience; of an update: with those reached before), inside Redis, in
    one script that also deletes the bitmaps it made."""
    _, sms, email, segments = await _REACH(redis, *_call(keys, city, inputs, None))
    return Reach(int(sms), int(email), int(segments))


async def record_with_reach(redis: Redis, keys: Keys, city: City, approval_id: str,
                            incident_id: str, draft_id: str,
                            inputs: ReachInputs | None = None) -> dict[str, str]:
    """An approval request's record (its hash), once its draft's reach is counted and kept
    on it (once: a replay keeps the first count). `inputs`: what the planner just wrote,
    else read from the draft and the incident; when either is gone, nothing is counted."""
    if inputs is None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.draft(draft_id))
            pipe.hmget(keys.incident(incident_id), ["area", "kind", "exercise", "drill_list"])
            draft, (area, kind, exercise, drill_list) = await pipe.execute()
        if draft is None or area is None or kind is None:
            return dict(await redis.hgetall(keys.approval(approval_id)))
        stored = json.loads(draft)
        inputs = ReachInputs(
            incident_id, area, kind,
            [RenderedText.model_validate(t) for t in stored["texts"] if t["channel"] == "sms"],
            exercise == "1", drill_list or None, bool(stored.get("references")))
    return kept_record(await _REACH(redis, *_call(keys, city, inputs,
                                                  keys.approval(approval_id))))
