"""Messages kept in Redis from before they go on the broker until their consumer has done
what they ask: Redis is the record, the broker carries.

A transition writes its follow-up messages (`queue`) in the same MULTI as the change
itself; anything else sends through :func:`send_kept`. The consumer removes a message once
its effect is recorded (`done`). A crash, a broker outage, or a broker restarted empty
loses none: a :class:`Drainer` sends again what has waited longer than :data:`RESEND_AFTER_S`, then
twice as long after each send, up to :data:`LONGEST_WAIT_S` (a consumer far behind is not
flooded with copies). Each time a worker starts or is given new partitions (a worker joined
or left, or the broker came back, maybe empty: whatever was on it may be lost), every kept
message is sent again at once, whatever its wait. After :data:`MAX_SENDS` sends (about 16
minutes) a message is parked: a dead letter notes it, `loa doctor` shows it, it is no longer
sent on a timer (a message its consumer refuses for good would come back forever), and is
sent again only as a worker starts or is given new partitions, and once every
:data:`PARKED_WAIT_S` otherwise. Only its consumer (or a person) forgets a message. Sending
twice is harmless, every consumer is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from coordinator import observability as obs
from coordinator import topics
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, Script

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
Message = tuple[str, str, bytes]  # (topic name, key, value)
RESEND_AFTER_S = 30.0
"""How long a message waits for its consumer before it is sent again (the first time)."""
LONGEST_WAIT_S = 600.0
"""The wait between sends doubles after each, up to this."""
MAX_SENDS = 6
"""Sends after which a message no consumer finishes is parked (see the module's text)."""
PARKED_WAIT_S = 3600.0
"""A parked message is sent again this long after its last send (and as a worker starts)."""
GIVE_UP_AFTER = 3
"""Failed sends in a row after which a drain round stops (the broker is away); the next
round starts again from the beginning."""
SEND_TIMEOUT_S = 5.0
"""A drain's send that takes longer than this counts as failed."""
RETRY_LONGEST_S = 60.0
"""A message whose send failed waits 1 s, then twice as long after each failure, up to
this, before the drain tries it again."""
log = obs.get_logger("outbox")
# KEYS[1] = followups, KEYS[2] = dead letters; ARGV = now, the sends that park a message,
# the dead letter's reason before and after the message's id, its time (ISO), then ids.
# Each message still kept: stamped sent now, one send more; the send that parks it first
# adds its dead letter, made here of the kept entry (its value cut to 10,000 bytes of whole
# characters), in the same script: a letter is never lost between the two. Returns each
# one's sends after this (0: no longer kept, not brought back).
_SENT = Script("""
local function cut(text, most)
  if #text <= most then return text end
  local last = most
  while last > 0 do
    local byte = string.byte(text, last + 1)
    if byte < 128 or byte >= 192 then break end
    last = last - 1
  end
  return string.sub(text, 1, last)
end
local counts = {}
for i = 6, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local count = 0
  if raw then
    local entry = cjson.decode(raw)
    count = (tonumber(entry['sends']) or 1) + 1
    if count == tonumber(ARGV[2]) then
      local letter = cjson.encode({schema_version = 1, type = 'dead_letter',
        topic = tostring(entry['topic']), key = tostring(entry['key']),
        value = cut(tostring(entry['value']), 10000), reason = ARGV[3] .. ARGV[i] .. ARGV[4],
        at = ARGV[5]})
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'letter', letter)
    end
    entry['first'] = entry['first'] or entry['at']
    entry['at'] = tonumber(ARGV[1])
    entry['sends'] = count
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
  end
  counts[#counts + 1] = count
end
return counts
""")
PARKED_REASON = ("no consumer finished ", f" after {MAX_SENDS} sends; parked: kept, and sent "
                 f"again as a worker starts and every {PARKED_WAIT_S / 3600:g} h")
"""A parked message's dead letter's reason, before and after its id."""


def queue(pipe: Pipeline, keys: Keys, messages: Mapping[str, Message], sent: bool = True
          ) -> None:
    """Inside MULTI: keep each message (by its id) until its consumer is done with it.
    `sent=False`: its maker does the work at once itself (see :func:`keep`)."""
    now = time.time()
    for mid, (topic, key, value) in messages.items():
        pipe.hset(keys.followups(), mid, _entry(topic, key, value, now, 1 if sent else 0))


async def keep(redis: Redis, keys: Keys, messages: Mapping[str, Message],
               done_with: Sequence[str] = ()) -> None:
    """Keep messages without sending them, in one round trip: for work their maker does at
    once itself. Should that be cut off, the drain sends each to its consumer (its first
    send: it counts 0 until then). `done_with`: kept messages whose work these carry on,
    forgotten in the same transaction (one of the two is always kept)."""
    now = time.time()
    entries = {mid: _entry(topic, key, value, now, 0)
               for mid, (topic, key, value) in messages.items()}
    if not done_with:
        if entries:
            await redis.hset(keys.followups(), mapping=entries)
        return
    async with redis.pipeline(transaction=True) as pipe:
        if entries:
            pipe.hset(keys.followups(), mapping=entries)
        pipe.hdel(keys.followups(), *done_with)
        await pipe.execute()


async def send_kept(redis: Redis, keys: Keys, mid: str, spec: topics.TopicSpec, key: str,
                    value: bytes, send: Send) -> None:
    """Keep the message, then send it. Raises what `send` raises (the message stays kept,
    and is sent again by the worker's drain)."""
    await redis.hset(keys.followups(), mid, _entry(spec.name, key, value, time.time(), 1))
    await send(spec, key, value)


async def sent(redis: Redis, keys: Keys, ids: list[str]) -> list[int]:
    """Note that kept messages went on the broker (one send more, the wait starts again), in
    one script; each one's sends so far, 0 for one its consumer has finished meanwhile (it
    stays forgotten). The send that parks a message (:data:`MAX_SENDS`) adds its dead
    letter, in the same script: exactly one of the workers (or handlers) that send it
    parks it."""
    if not ids:
        return []
    return [int(n) for n in await _SENT(
        redis, [keys.followups(), keys.dead_letters()],
        [repr(time.time()), MAX_SENDS, *PARKED_REASON, utcnow().isoformat(), *ids])]


async def done(redis: Redis, keys: Keys, ids: list[str]) -> None:
    """Forget messages whose consumer has recorded their effect."""
    if ids:
        await redis.hdel(keys.followups(), *ids)


def queue_done(pipe: Pipeline, keys: Keys, ids: list[str]) -> None:
    """Inside MULTI: :func:`done`, with the record of the effect."""
    if ids:
        pipe.hdel(keys.followups(), *ids)


async def note_sent(redis: Redis, keys: Keys, messages: Mapping[str, Message]) -> None:
    """Note that kept messages went on the broker, and park each that has now been sent
    :data:`MAX_SENDS` times, with its one dead letter (see :func:`sent`)."""
    await sent(redis, keys, list(messages))


class Drainer:
    """One worker's drain of the kept messages, a round at a time (see the module's text).

    Remembers which kept messages it owes the broker since it started or was given new
    partitions (:meth:`send_all_again`), which kept messages it cannot send at all
    (unreadable, or for a topic it does not know, as a newer Loa's: logged once and left
    kept, for a worker that knows them or a person), and which failed their last send (each
    waits twice as long as before, from 1 s up to :data:`RETRY_LONGEST_S`, so one the broker
    refuses for good neither holds up the others nor goes out every round)."""

    def __init__(self, redis: Redis, keys: Keys, send: Send,
                 first_wait_s: float = RESEND_AFTER_S, send_timeout_s: float = SEND_TIMEOUT_S
                 ) -> None:
        self.redis, self.keys, self.send = redis, keys, send
        self.first_wait_s, self.send_timeout_s = first_wait_s, send_timeout_s
        self._owe_all = True  # the next round sends every kept message (see send_all_again)
        self._owed: set[str] = set()  # ids to send again at once: kept when it was asked
        self._unsendable: dict[str, str] = {}  # id -> why (its topic, or its raw entry)
        self._retry: dict[str, tuple[int, float]] = {}  # id -> (failed sends, monotonic)

    def send_all_again(self) -> None:
        """Every message kept now goes out again from the next round on, whatever its wait,
        parked or not, each until one send of it goes through (new partitions: a worker
        joined or left, or the broker came back, maybe empty, and lost what it carried); so
        do those waiting after a failed send: the broker that refused them may be back."""
        self._owe_all = True
        self._retry.clear()

    @property
    def all_sent(self) -> bool:
        """Whether every message owed since the worker started or was last given new
        partitions has gone out again (or is gone: finished, or one this worker cannot
        send)."""
        return not self._owe_all and not self._owed

    async def round(self) -> int:
        """Send again what is due: what has waited longer than its wait (`first_wait_s`
        after its first send, doubling after each; :data:`PARKED_WAIT_S` once parked), and
        every message owed since :meth:`send_all_again` (or the worker's start) at once.
        Returns how many were sent. A send that fails (or takes longer than
        `send_timeout_s`) is logged and the round goes on; after :data:`GIVE_UP_AFTER`
        failed sends in a row (the broker is away) it stops, and the next round starts
        again from the beginning."""
        resent = failed_in_a_row = 0
        now, clock = time.time(), time.monotonic()
        kept = await self._read_kept()
        for mid, raw in kept.items():
            found = self._readable(mid, raw)
            if found is None:
                self._owed.discard(mid)
                continue
            spec, message, at, sends = found
            wait = (PARKED_WAIT_S if sends >= MAX_SENDS
                    else wait_before_resend(sends, self.first_wait_s))
            due = now - at >= wait
            if not due and mid not in self._owed:
                continue
            failures, retry_at = self._retry.get(mid, (0, 0.0))
            if retry_at > clock:  # failed its last send: waits its turn
                continue
            try:
                await asyncio.wait_for(self.send(spec, message[1], message[2]),
                                       self.send_timeout_s)
            except Exception as exc:
                failed_in_a_row += 1
                failures += 1
                self._retry[mid] = (failures, clock + min(RETRY_LONGEST_S,
                                                          2.0 ** (failures - 1)))
                log.warning("kept message not sent again; a later round retries", id=mid,
                            failures=failures, error=repr(exc))
                if failed_in_a_row >= GIVE_UP_AFTER:
                    return resent
                continue
            failed_in_a_row = 0
            self._retry.pop(mid, None)
            self._owed.discard(mid)
            resent += 1
            # A rebalance's resend of one not due yet is not noted: each worker resends
            # everything at each rebalance; its wait and its count towards parking it go on
            # as if it had not been (else rebalances more often than its wait would keep it
            # from ever being due, and parked, and said stuck).
            if due:
                await self._note(mid, message)
        return resent

    async def _read_kept(self) -> dict[str, str]:
        """Every kept message; all of them owed when :meth:`send_all_again` was asked
        before this read (asked during it: by the next round's)."""
        owe_all, self._owe_all = self._owe_all, False
        try:
            kept: dict[str, str] = await self.redis.hgetall(self.keys.followups())
        except BaseException:
            self._owe_all = self._owe_all or owe_all  # still owed, to the next round
            raise
        if owe_all:
            self._owed = set(kept)
        self._forget_gone(kept)
        return kept

    async def _note(self, mid: str, message: Message) -> None:
        try:
            await note_sent(self.redis, self.keys, {mid: message})
        except Exception as exc:  # on the broker, not noted: it is sent again sooner
            log.warning("kept message sent again, not noted as sent", id=mid, error=repr(exc))

    def _readable(self, mid: str, raw: str
                  ) -> tuple[topics.TopicSpec, Message, float, int] | None:
        """What the drain needs of an entry, or None for one this worker cannot send
        (logged the first time)."""
        entry: Any = None
        try:
            entry = json.loads(raw)
            topic, key, value = entry["topic"], entry["key"], entry["value"]
            if not all(isinstance(x, str) for x in (topic, key, value)):
                raise TypeError("topic, key and value must be strings")
            spec = topics.spec_named(topic)
            found = (spec, (topic, key, value.encode()), float(entry["at"]),
                     int(entry.get("sends", 1)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Said once per id and topic: a newer worker resending it changes the entry.
            why = str(entry.get("topic")) if isinstance(entry, dict) else raw
            if self._unsendable.get(mid) != why:
                self._unsendable[mid] = why
                log.warning("kept message this worker cannot send; left kept for a worker "
                            "that can, or a person", id=mid, error=repr(exc),
                            remove=f"redis-cli HDEL {self.keys.followups()} {mid}")
            return None
        self._unsendable.pop(mid, None)
        return found

    def _forget_gone(self, kept: Mapping[str, str]) -> None:
        """What is remembered of messages no longer kept is dropped."""
        for memory in (self._unsendable, self._retry):
            for mid in [m for m in memory if m not in kept]:
                del memory[mid]
        self._owed.intersection_update(kept)


def wait_before_resend(sends: int, first_s: float = RESEND_AFTER_S) -> float:
    """How long a message sent `sends` times waits for its consumer before it is sent
    again: `first_s` (also for one kept and never sent), doubling after each send, at most
    :data:`LONGEST_WAIT_S`. Pure."""
    return min(first_s * (1 << min(max(sends - 1, 0), 30)), max(LONGEST_WAIT_S, first_s))


async def waiting(redis: Redis, keys: Keys) -> list[tuple[str, float, int]]:
    """Every kept message: (id, seconds since it was kept, sends so far). One that cannot
    be read (damaged, or written by hand) is listed with sends -1 and no age (0)."""
    now = time.time()
    found = []
    for mid, raw in (await redis.hgetall(keys.followups())).items():
        try:
            entry = json.loads(raw)
            found.append((mid, now - float(entry.get("first", entry["at"])),
                          int(entry.get("sends", 1))))
        except (ValueError, KeyError, TypeError, AttributeError):
            found.append((mid, 0.0, -1))
    return found


def _entry(topic: str, key: str, value: bytes, at: float, sends: int) -> str:
    return json.dumps({"topic": topic, "key": key, "value": value.decode(), "at": at,
                       "sends": sends, "first": at})
