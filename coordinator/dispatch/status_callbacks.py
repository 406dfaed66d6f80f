"""Provider status callbacks (sent, delivered, undelivered, failed), applied in batches.

A fan-out of 100,000 SMS brings 200,000 callbacks or more. Each moves one delivery forward
(never back, never sideways: callbacks come out of order, and the first ending stands) and
counts it in its statement's ledger. One
callback costs one script run (called by its SHA1), atomic on the server (it was a WATCH /
MULTI transaction of five round trips), which also keeps the status of one that came before
its send was recorded; callbacks that arrive together in one web process are applied
together, one round trip for the whole batch (`StatusCallbacks`), and each is answered only
once its batch is written, so the provider retries anything Redis did not take.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime

from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch.handover import PROGRESS, tally
from coordinator.dispatch.provider_ids import PROVIDER_IDS_KEPT_S
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, Script, run_pipeline

# KEYS[1]: the provider id's key (Keys.provider_message), KEYS[2]: the early callbacks'
# hash, KEYS[3]: the SMS awaiting their final status (Keys.unconfirmed). ARGV: the provider
# id, the new status, its error code, when, the prefix of a delivery's key
# (Keys.delivery("")) and of a statement's ledger key (Keys.dispatch("")), how long the
# early callbacks are kept (s). The delivery's and the ledger's keys are a prefix and an id
# read here: one Redis, as Loa runs it (a cluster would need them declared). Each status's
# progress and the column it is counted in are written into the script (`_lua_table`).
# A send not recorded yet: its status is kept as early, `status|error code` (the further
# one, when two come first), for the send's record to take; nil. Else the delivery moves
# to the status if it is further on (one of the same rank changes nothing: `sending` after
# the hand-over's `queued`, a second ending), counted once in its ledger, and at an ending
# nobody needs to ask the provider for it any more; {the delivery id, 1 if it moved, else 0,
# its status now}.
# Looking the provider id up and keeping the status in one script: the send's record (whose
# transaction takes the early statuses) cannot come in between and leave one behind.
_CALLBACK_TEXT = """
local rank = RANKS
local column = COLUMNS
local new = ARGV[2]
local delivery = redis.call('GET', KEYS[1])
if not delivery then
  local kept = redis.call('HGET', KEYS[2], ARGV[1])
  if kept then kept = string.match(kept, '^[^|]*') end
  if not kept or (rank[new] or 0) > (rank[kept] or 0) then
    redis.call('HSET', KEYS[2], ARGV[1], new .. '|' .. ARGV[3])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  return false
end
local key = ARGV[5] .. delivery
local row = redis.call('HMGET', key, 'status', 'statement_id', 'channel')
if not row[1] and not row[2] then return {delivery, 0, ''} end
local current = row[1] or ''
if (rank[new] or 0) <= (rank[current] or 0) then return {delivery, 0, current} end
redis.call('HSET', key, 'status', new, 'error_code', ARGV[3], 'updated_at', ARGV[4])
if rank[new] >= ENDING then redis.call('ZREM', KEYS[3], delivery) end
local was, now = column[current] or current, column[new] or new
if row[2] and row[2] ~= '' and was ~= now then
  redis.call('HINCRBY', ARGV[6] .. row[2], (row[3] or '') .. ':' .. now, 1)
end
return {delivery, 1, new}
"""


def _lua_table(pairs: dict[str, object]) -> str:
    """A Lua table constructor of `pairs` (string keys; string or number values). Pure.
    Plain words only: JSON's \\u escapes mean something else to Lua 5.1."""
    if not all(x.isascii() and x.isidentifier()
               for kv in pairs.items() for x in kv if isinstance(x, str)):
        raise ValueError(f"not plain words: {pairs!r}")
    return "{" + ", ".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in pairs.items()) + "}"


_RANKS = _lua_table(dict(PROGRESS))
_COLUMNS = _lua_table({status: tally(status) for status in (
    "queued", "accepted", "sending", "sent", "delivered", "undelivered", "failed", "skipped")})
ENDING = max(PROGRESS.values())
"""The rank of a final status (delivered, undelivered, failed)."""
_CALLBACK = Script(_CALLBACK_TEXT.replace("RANKS", _RANKS).replace("COLUMNS", _COLUMNS)
                   .replace("ENDING", str(ENDING)))


# KEYS[1]: the early callbacks' hash, KEYS[2]: the SMS awaiting their final status, then the
# deliveries' hashes. ARGV: when, the ledger key's prefix (as for _CALLBACK), then each
# delivery's provider id and id. For each delivery whose provider id has an early status
# (`status|error code`; a bare status as older releases kept it): take it (HDEL) and, if it
# is further on than the record (strictly: the hand-over's answer stands against a callback
# of the same rank), move the record to it, with its error code, and count it; at an ending
# it awaits nothing more. Returns each delivery's status afterwards ('' untouched).
_TAKE_EARLY_TEXT = """
local rank = RANKS
local column = COLUMNS
local out = {}
for k = 1, #KEYS - 2 do
  local key, pid, id = KEYS[k + 2], ARGV[2 * k + 1], ARGV[2 * k + 2]
  local kept = redis.call('HGET', KEYS[1], pid)
  out[k] = ''
  if kept then
    redis.call('HDEL', KEYS[1], pid)
    local early, code = string.match(kept, '^([^|]*)|?(.*)$')
    local row = redis.call('HMGET', key, 'status', 'statement_id', 'channel')
    local current = row[1] or ''
    if (rank[early] or 0) > (rank[current] or 0) then
      redis.call('HSET', key, 'status', early, 'error_code', code, 'updated_at', ARGV[1])
      if rank[early] >= ENDING then redis.call('ZREM', KEYS[2], id) end
      local was, now = column[current] or current, column[early] or early
      if row[2] and row[2] ~= '' and was ~= now then
        redis.call('HINCRBY', ARGV[2] .. row[2], (row[3] or '') .. ':' .. now, 1)
      end
      out[k] = early
    end
  end
end
return out
"""
_TAKE_EARLY = (_TAKE_EARLY_TEXT.replace("RANKS", _RANKS).replace("COLUMNS", _COLUMNS)
               .replace("ENDING", str(ENDING)))


def queue_take_early(pipe: Pipeline, keys: Keys, pairs: dict[str, str], now: datetime
                     ) -> bool:
    """Inside MULTI, after the deliveries' records (``handover.queue_outcome``): take the
    statuses of callbacks that came before the sends were recorded (provider id -> delivery
    id in `pairs`), and apply each that is further on, counted in its ledger. Its reply,
    the transaction's last, is read by :func:`taken_early`. The script goes with its text
    (EVAL): a Redis that lost it since cannot fail it inside the transaction, whose other
    writes would stand. False when there is nothing to take (nothing queued)."""
    if not pairs:
        return False
    pipe.eval(_TAKE_EARLY, 2 + len(pairs), keys.early_callbacks(), keys.unconfirmed(),
              *[keys.delivery(d) for d in pairs.values()], now.isoformat(), keys.dispatch(""),
              *[x for pair in pairs.items() for x in pair])
    return True


def taken_early(pairs: dict[str, str], reply: list[object]) -> dict[str, str]:
    """The statuses :func:`queue_take_early` applied, by delivery id (its reply). Pure."""
    return {d: str(status) for d, status in zip(pairs.values(), reply, strict=True)
            if status}


async def record_statuses(redis: Redis, keys: Keys, updates: Sequence[StatusUpdate],
                          now: datetime) -> list[str | None]:
    """Apply status callbacks, in one round trip whatever their number; for each, the
    delivery id, or None for a message not recorded yet (its status is kept until it is,
    for :data:`PROVIDER_IDS_KEPT_S`)."""
    return [found[0] if found else None for found in await apply_statuses(
        redis, keys, updates, now)]


async def apply_statuses(redis: Redis, keys: Keys, updates: Sequence[StatusUpdate],
                         now: datetime) -> list[tuple[str, bool, str] | None]:
    """:func:`record_statuses`, saying for each whether this moved its delivery on, and its
    status now: (delivery id, False, status) when the delivery was there or further already
    (a callback that came meanwhile, or a second one)."""
    if not updates:
        return []

    def fill(pipe: Pipeline) -> None:  # may run twice (see run_pipeline): forward only
        for update in updates:
            _CALLBACK.queue(pipe, [keys.provider_message(update.provider_id),
                                   keys.early_callbacks(), keys.unconfirmed()],
                            [update.provider_id, update.status, update.error_code,
                             now.isoformat(), keys.delivery(""), keys.dispatch(""),
                             PROVIDER_IDS_KEPT_S])

    return [(str(found[0]), bool(int(found[1])), str(found[2])) if found else None
            for found in await run_pipeline(redis, fill)]


class StatusCallbacks:
    """The status callbacks one web process is applying: whatever arrives while a batch is
    being written goes in the next one, so an idle process writes each at once and a busy
    one writes them by the hundred (at most `most` a batch)."""

    def __init__(self, redis: Redis, keys: Keys, most: int = 500) -> None:
        self.redis, self.keys, self.most = redis, keys, most
        self._waiting: list[tuple[StatusUpdate, asyncio.Future[str | None]]] = []
        self._writing: asyncio.Task[None] | None = None
        self.batches = 0  # written so far (callbacks / batches: how much batching saves)

    async def record(self, update: StatusUpdate) -> str | None:
        """Apply one callback with whatever else is waiting; returns once it is written
        (the delivery id, or None when the message is not recorded yet). Raises what Redis
        raised, for every callback of the batch."""
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((update, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.most], self._waiting[self.most:]
                self.batches += 1
                try:
                    ids = await record_statuses(self.redis, self.keys, [u for u, _ in batch],
                                                utcnow())
                except Exception as exc:  # each caller answers with Redis's error
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), delivery_id in zip(batch, ids, strict=True):
                    if not done.done():
                        done.set_result(delivery_id)
        finally:
            self._writing = None
