"""A statement's dispatch ledger: the record in Redis of a fan-out, from which a restarted
worker finishes it, even when the broker kept nothing.

One hash per statement (``Keys.dispatch``): when the fan-out started and last moved, where
it is in the audience (the bit to cut from, -1 at the end, and how many chunks it has cut),
how many batches it made and whether every chunk is cut (`queued_all`), and whether it was
withdrawn. Beside it: each batch's subscriber numbers until the batch is done, the set of
done batches, and the index of fan-outs not finished (``Keys.dispatches_open``). A fan-out
is finished when every chunk is cut and every batch is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, Script, delete_if_still, run_pipeline

LOCK_TTL_MS = 30_000
"""How long the right to cut a statement's audience into batches lasts without a move."""

# KEYS: the lock; ARGV: who asks (worker/instance), its lifetime (ms), the heartbeat key
# prefix. Taken when free, or when its holder is gone (its worker's heartbeat missing or
# naming another instance of it: restarted, or killed): a statement whose cutter died
# goes out as soon as that is known, not once the lock has run out. A holder alive after
# all writes nothing more under the new one (``dispatch.cut_lock``).
_LOCK = Script("""
local held = redis.call('GET', KEYS[1])
if held then
  if held == ARGV[1] then return 0 end
  local slash = string.find(held, '/', 1, true) or (#held + 1)
  local alive = redis.call('GET', ARGV[3] .. string.sub(held, 1, slash - 1))
  if alive and alive == string.sub(held, slash + 1) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""")

# KEYS: ledger hash, done set, open index, the batch's numbers; ARGV: finished batch (or
# ""), now, statement id. Marks the batch done (its numbers are not needed any more) and, when every
# chunk is cut and every batch done, finishes the fan-out: one script, so two workers
# finishing the last two batches cannot both miss it.
_SETTLE = Script("""
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  redis.call('ZREM', KEYS[3], ARGV[3])  -- put back by a cutter that stalled: it clears
  return 1
end
if ARGV[1] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[1])
  if KEYS[4] ~= KEYS[2] then redis.call('DEL', KEYS[4]) end
end
redis.call('HSET', KEYS[1], 'progress_at', ARGV[2])
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches') or '0')
if redis.call('HEXISTS', KEYS[1], 'queued_all') == 1
   and redis.call('SCARD', KEYS[2]) >= batches then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
""")

@dataclass(frozen=True)
class Ledger:
    """A statement's dispatch ledger as read at one moment."""

    statement_id: str
    started_at: float
    progress_at: float
    resolved: bool
    audience: int
    cursor: int
    chunks: int
    batches: int
    queued_all: bool
    finished: bool
    withdrawn_at: str
    at_once: str = ""  # `<chunk>|<worker>/<instance>`: who hands that chunk over itself

    @classmethod
    def from_hash(cls, statement_id: str, row: dict[str, str]) -> Ledger:
        """The ledger of a `Keys.dispatch` hash (an empty hash: nothing started). Pure."""
        return cls(statement_id=statement_id, started_at=float(row.get("started_at", 0)),
                   progress_at=float(row.get("progress_at", row.get("started_at", 0))),
                   resolved="resolved" in row, audience=int(row.get("audience", 0)),
                   cursor=int(row.get("cursor", 0)), chunks=int(row.get("chunks", 0)),
                   batches=int(row.get("batches", 0)), queued_all="queued_all" in row,
                   finished="finished_at" in row, withdrawn_at=row.get("withdrawn_at", ""),
                   at_once=row.get("at_once", ""))


async def read_ledger(redis: Redis, keys: Keys, statement_id: str) -> Ledger:
    """The statement's ledger now."""
    return Ledger.from_hash(statement_id, await redis.hgetall(keys.dispatch(statement_id)))


def queue_open(pipe: Pipeline, keys: Keys, statement_id: str, now: float) -> None:
    """Inside MULTI: note that the fan-out has started (once: again changes nothing)."""
    pipe.hsetnx(keys.dispatch(statement_id), "started_at", now)
    pipe.zadd(keys.dispatches_open(), {statement_id: now}, nx=True)


def queue_resolved(pipe: Pipeline, keys: Keys, statement_id: str, audience: int,
                   now: float) -> None:
    """Inside MULTI: the audience bitmap is complete; chunks are cut from its start (it
    resets the cursor and counts: queued before the first chunk's :func:`queue_chunk`)."""
    ledger = keys.dispatch(statement_id)
    pipe.hset(ledger, mapping={"resolved": "1", "audience": audience, "cursor": 0, "chunks": 0,
                               "batches": 0, "progress_at": now})
    # what a cutter that lost the lock counted of chunk 0 (its batch is the same)
    pipe.hdel(ledger, "targeted:sms", "targeted:email")


def queue_chunk(pipe: Pipeline, keys: Keys, statement_id: str, number: int, cursor: int,
                batches: dict[str, list[int]], now: float, incident_id: str = "") -> None:
    """Inside MULTI: chunk `number` of the audience, cut into one batch per channel (empty
    ones left out), and the cursor after it: all or nothing, so a crash recuts the chunk.
    The chunk's subscribers join those the incident has reached."""
    ledger = keys.dispatch(statement_id)
    for channel, numbers in batches.items():
        pipe.set(keys.dispatch_batch(statement_id, channel, number), ",".join(map(str, numbers)))
        pipe.hincrby(ledger, f"targeted:{channel}", len(numbers))
        if incident_id and numbers:
            pipe.execute_command("BITFIELD", keys.incident_reached(incident_id), *[
                a for n in numbers for a in ("SET", "u1", n, 1)])
    pipe.hincrby(ledger, "batches", len(batches))
    pipe.hset(ledger, mapping={"cursor": cursor, "chunks": number + 1, "progress_at": now})


def queue_cut_through(pipe: Pipeline, keys: Keys, statement_id: str) -> None:
    """Inside MULTI: every chunk is cut (the audience bitmap is not needed any more)."""
    pipe.hset(keys.dispatch(statement_id), "queued_all", "1")
    pipe.delete(keys.dispatch_audience(statement_id))


async def settle(redis: Redis, keys: Keys, statement_id: str, now: float,
                 done_batch: str = "", batch_key: str = "") -> bool:
    """Record a finished batch (`channel:number`, its ids kept at `batch_key`), or see
    whether the fan-out is finished: every chunk cut (:func:`queue_cut_through`) and every
    batch done; True when it is (then it leaves the open index)."""
    finished = await _SETTLE(redis, [keys.dispatch(statement_id),
                                     keys.dispatch_done(statement_id), keys.dispatches_open(),
                                     batch_key or keys.dispatch_done(statement_id)],
                             [done_batch, now, statement_id])
    return bool(finished)


async def lock_and_read(redis: Redis, keys: Keys, statement_id: str, holder: str
                        ) -> tuple[bool, Ledger, int]:
    """The right to cut the audience into batches (False while another live process has
    it), the ledger as read right after asking for it, and how long the holder's own
    heartbeat has to run (ms; 0 when it does not name this holder): one round trip."""
    worker, _, instance = holder.partition("/")
    heartbeat = keys.worker_heartbeat(worker)

    def fill(pipe: Pipeline) -> None:
        _LOCK.queue(pipe, [keys.dispatch_lock(statement_id)],
                    [holder, LOCK_TTL_MS, keys.worker_heartbeat("")])
        pipe.hgetall(keys.dispatch(statement_id))
        pipe.get(heartbeat)
        pipe.pttl(heartbeat)

    taken, row, beating, left = await run_pipeline(redis, fill)
    return (bool(taken), Ledger.from_hash(statement_id, row),
            max(0, int(left)) if beating == instance else 0)


async def release_lock(redis: Redis, keys: Keys, statement_id: str, holder: str) -> None:
    """Give the right up (only if it is still `holder`'s)."""
    await delete_if_still(redis, keys.dispatch_lock(statement_id), holder)


async def open_fan_outs(redis: Redis, keys: Keys) -> list[tuple[str, float]]:
    """Every fan-out not finished, oldest first: (statement id, when it started)."""
    return [(str(sid), float(at)) for sid, at in
            await redis.zrange(keys.dispatches_open(), 0, -1, withscores=True)]


async def withdraw(redis: Redis, keys: Keys, statement_id: str, when: str) -> bool:
    """Mark the fan-out withdrawn; False when it already was."""
    return bool(await redis.hsetnx(keys.dispatch(statement_id), "withdrawn_at", when))
