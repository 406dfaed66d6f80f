"""Finish what the broker lost: fan-outs and single deliveries whose events never arrived.

Every worker runs :func:`recover` every few seconds (one at a time, by a short lock). It
reads the dispatch ledgers of the fan-outs not finished and the single deliveries still
pending; what has not moved for :data:`STALLED_S` is put on the broker again: the rest of
the audience cut into batches, the batches not done, the deliveries not finished. The
first batches a publishing worker hands over itself go on the broker as soon as that
worker's heartbeat is gone, the rest of the fan-out moving or not. Sending
again is safe: every delivery is claimed by its id, so a repeat hands nothing over twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from coordinator import observability as obs
from coordinator.dispatch.deliveries import Send, send_kept_deliveries
from coordinator.dispatch.fanout import CHANNELS, fan_out, send_batch
from coordinator.dispatch.handover import FINAL
from coordinator.dispatch.ledger import Ledger, open_fan_outs, read_ledger, settle
from coordinator.events import DeliveryBatch, DeliveryRequest, Statement
from coordinator.runtime import Runtime

STALLED_S = 15.0
"""A fan-out that has not moved for this long has lost its events (or its worker):
``LOA_RECOVER_STALLED_AFTER_S``."""
PENDING_S = 30.0
"""A single delivery not finished after this long is sent again: ``LOA_RESEND_KEPT_AFTER_S``."""
ROUND_LOCK_S = 5
UNREADABLE = (ValueError, KeyError, TypeError)
"""What a record this release cannot decode raises (pydantic's ValidationError and json's
errors are ValueErrors): a newer release's, rolled back, or one edited by hand."""
log = obs.get_logger("recovery")


@dataclass
class Recovered:
    """What one round put on the broker again."""

    fan_outs_resumed: int = 0
    batches_sent_again: int = 0
    deliveries_sent_again: int = 0

    def __bool__(self) -> bool:
        return bool(self.fan_outs_resumed or self.batches_sent_again
                    or self.deliveries_sent_again)


async def recover(rt: Runtime, send: Send, stalled_s: float = STALLED_S,
                  pending_s: float = PENDING_S) -> Recovered:
    """One recovery round (nothing when another worker is running one)."""
    done = Recovered()
    if not await rt.redis.set(rt.keys.recovery_lock(), rt.instance, nx=True, ex=ROUND_LOCK_S):
        return done
    now = time.time()
    for statement_id, _ in await open_fan_outs(rt.redis, rt.keys):
        try:
            await _recover_fan_out(rt, statement_id, send, now, stalled_s, done)
        except UNREADABLE as exc:  # one this release cannot read holds up no other
            log.error("fan-out not recovered: its records cannot be read",
                      statement=statement_id, error=repr(exc))
    done.deliveries_sent_again = await _send_deliveries_again(rt, send, now, pending_s)
    return done



async def _recover_fan_out(rt: Runtime, statement_id: str, send: Send, now: float,
                           stalled_s: float, done: Recovered) -> None:
    ledger = await read_ledger(rt.redis, rt.keys, statement_id)
    if now - ledger.progress_at < stalled_s:
        if ledger.at_once:  # moving: but its first batches' worker may be gone
            done.batches_sent_again += await _first_batches_again(rt, ledger, send, now)
        return
    if not ledger.queued_all:
        raw = await rt.redis.hget(rt.keys.statement(statement_id), "statement")
        if raw is not None:
            await fan_out(rt, Statement.model_validate_json(raw), send)
            done.fan_outs_resumed += 1
        return
    done.batches_sent_again += await _send_batches_again(rt, ledger, send, now)
    if ledger.at_once:  # sent again with the rest: not once more for its worker
        await rt.redis.hdel(rt.keys.dispatch(statement_id), "at_once")


async def _first_batches_again(rt: Runtime, ledger: Ledger, send: Send, now: float) -> int:
    """The batches a publishing worker handed over itself (``fanout.fan_out``'s `start`)
    go on the broker again, once, when that worker is gone (killed: one stopped hands them
    on itself), while the rest of its fan-out still moves."""
    number, _, owner = ledger.at_once.partition("|")
    worker_id, _, instance = owner.partition("/")  # as the claim script reads an owner
    if not number.isdigit():  # not ours (edited by hand): the stalled round covers it
        log.warning("dispatch ledger's at_once not understood; dropped",
                    statement=ledger.statement_id, at_once=ledger.at_once)
        await rt.redis.hdel(rt.keys.dispatch(ledger.statement_id), "at_once")
        return 0
    if await rt.redis.get(rt.keys.worker_heartbeat(worker_id)) == instance:
        return 0  # still running: it finishes them
    sent = await _send_batches_again(rt, ledger, send, now, only=int(number))
    await rt.redis.hdel(rt.keys.dispatch(ledger.statement_id), "at_once")
    return sent


async def _send_batches_again(rt: Runtime, ledger: Ledger, send: Send, now: float,
                              only: int | None = None) -> int:
    """Every batch of a stalled fan-out (or of its chunk `only`) that is not done goes on
    the broker again."""
    sid, keys = ledger.statement_id, rt.keys
    finished = await rt.redis.smembers(keys.dispatch_done(sid))
    numbers = range(ledger.chunks) if only is None else [only]
    candidates = [(channel, n) for n in numbers for channel in CHANNELS
                  if f"{channel}:{n}" not in finished]
    async with rt.redis.pipeline(transaction=False) as pipe:
        for channel, n in candidates:
            pipe.exists(keys.dispatch_batch(sid, channel, n))
        present = await pipe.execute() if candidates else []
    statement = await rt.redis.hget(keys.statement(sid), "statement")
    incident_id = Statement.model_validate_json(statement).incident_id if statement else ""
    again = [(channel, n) for (channel, n), there in zip(candidates, present, strict=True)
             if there]
    for channel, n in again:
        await send_batch(send, DeliveryBatch(statement_id=sid, channel=channel,  # type: ignore[arg-type]
                                             incident_id=incident_id, number=n))
    # Stamped as a move, so the next round waits another STALLED_S; with nothing left to
    # send, this settles a fan-out whose last batch was done but not yet counted.
    await settle(rt.redis, keys, sid, now)
    return len(again)


async def _send_deliveries_again(rt: Runtime, send: Send, now: float, pending_s: float
                                 ) -> int:
    """Single deliveries kept longer than `pending_s` and not finished go out again."""
    again = 0
    for delivery_id, raw in (await rt.redis.hgetall(rt.keys.deliveries_pending())).items():
        try:
            entry = json.loads(raw)
            request = DeliveryRequest.model_validate_json(entry["request"])
            if now - float(entry["at"]) < pending_s:
                continue
        except UNREADABLE as exc:  # kept for a release that reads it; the others go on
            log.error("kept delivery not sent again: it cannot be read",
                      delivery=delivery_id, error=repr(exc))
            continue
        status = await rt.redis.hget(rt.keys.delivery(delivery_id), "status")
        if status in FINAL:
            await rt.redis.hdel(rt.keys.deliveries_pending(), delivery_id)
            continue
        # Stamped again first, and kept whatever the broker says: a resend that fails is
        # tried again next round, never forgotten.
        await rt.redis.hset(rt.keys.deliveries_pending(), delivery_id,
                            json.dumps({**entry, "at": now}))
        again += await send_kept_deliveries([request], send)
    return again
