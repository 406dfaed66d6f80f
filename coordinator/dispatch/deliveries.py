"""Hand a single delivery (an approval prompt, a hold alert, a confirmation code) to its
channel: once, with retries, never to someone who said STOP. A statement's deliveries go
in batches (``dispatch.batches``); both share ``dispatch.handover``.

A single delivery is kept in Redis (``Keys.deliveries_pending``) from before its event goes
on the broker until it is finished, so a broker that lost the event loses no delivery
(``dispatch.recovery`` sends it again). A request already sent (or failed for good) is not
sent again when its event is replayed. A delivery left in `sending` by a crash is attempted
again, once the provider has been asked whether the cut-off attempt got through. The
worker's stop, and for a topic's event a rebalance, cut a hand-over off that has not reached
the provider, or that the provider has not answered within a grace (``dispatch.stopping``):
its claim is given back (one cut off with the provider is `busy` to every claim until its
request would have landed), and it is `held`, for its caller to put back on its topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from channels.base import Channel
from coordinator import observability as obs
from coordinator import topics
from coordinator.dispatch.handover import (
    FINAL,
    Outcome,
    claim,
    give_back,
    give_back_landing,
    hand_over,
    queue_outcome,
    release,
    skip_reason,
)
from coordinator.dispatch.provider_ids import callback_id, queue_provider_ids
from coordinator.dispatch.status_callbacks import queue_take_early, taken_early
from coordinator.dispatch.status_sweep import queue_unconfirmed
from coordinator.dispatch.stopping import SingleHandOver, Stopping
from coordinator.errors import BrokerUnavailable
from coordinator.events import DeliveryRequest, utcnow
from coordinator.keys import Keys
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
HELD = "held"
"""A delivery's status when the worker's stop or a rebalance cut it off, or came before it
started: it is kept, its claim given back, for its caller to put back on its topic."""
log = obs.get_logger("dispatch")


@dataclass(frozen=True)
class Delivered:
    """What happened to one delivery request."""

    status: str
    detail: str


def lane_of(request: DeliveryRequest) -> topics.TopicSpec:
    """The topic that carries a single delivery on its channel. Pure."""
    return topics.DELIVERIES_SMS if request.channel == "sms" else topics.DELIVERIES_EMAIL


async def keep_delivery(redis: Redis, keys: Keys, request: DeliveryRequest) -> None:
    """Keep the request in Redis until its outcome is recorded: one the broker lost, or a
    process cut off while handing it over, is sent again by ``dispatch.recovery``."""
    await redis.hset(keys.deliveries_pending(), request.id, _pending(request))


def queue_keep_delivery(pipe: Pipeline, keys: Keys, request: DeliveryRequest) -> None:
    """Inside MULTI: :func:`keep_delivery`."""
    pipe.hset(keys.deliveries_pending(), request.id, _pending(request))


def _pending(request: DeliveryRequest) -> str:
    return json.dumps({"at": time.time(), "request": request.model_dump_json()})


async def queue_delivery(redis: Redis, keys: Keys, request: DeliveryRequest, send: Send
                         ) -> None:
    """Keep the request in Redis, then put it on its channel's lane. Raises what `send`
    raises; for BrokerUnavailable (the broker did not take it: the caller says so) nothing
    is kept."""
    await keep_delivery(redis, keys, request)
    try:
        await send(lane_of(request), request.id, request.to_bytes())
    except BrokerUnavailable:
        await redis.hdel(keys.deliveries_pending(), request.id)
        raise


def keep_deliveries(pipe: Pipeline, keys: Keys, requests: list[DeliveryRequest]) -> None:
    """Inside MULTI: keep the requests as pending, in the transaction that records why they
    are sent; :func:`send_kept_deliveries` puts them on the broker after it."""
    for request in requests:
        pipe.hset(keys.deliveries_pending(), request.id,
                  json.dumps({"at": time.time(), "request": request.model_dump_json()}))


async def send_kept_deliveries(requests: list[DeliveryRequest], send: Send) -> int:
    """Put kept requests on their channels' lanes; how many the broker took. At the first
    it does not take, stop: they all stay kept, and the worker's recovery sends them again
    (``dispatch.recovery``), without this caller waiting out the broker once per message."""
    sent = 0
    for request in requests:
        try:
            await send(lane_of(request), request.id, request.to_bytes())
        except BrokerUnavailable:
            break
        sent += 1
    return sent


BUSY_WAIT_S = 5.0
"""How long a delivery another live worker is handing over is waited for before this
event leaves it to that worker."""
_handing: set[str] = set()  # single deliveries this process is handing over now


async def deliver(rt: Runtime, channels: dict[str, Channel], request: DeliveryRequest,
                  now: datetime, stopping: Stopping | None = None, on_topic: bool = True
                  ) -> Delivered:
    """Send a delivery request through its channel, at most once to the provider per success.
    The same request twice at once in this process (a prompt handled at once and sent again
    by a replay or a drain meanwhile): the second leaves it to the first, whose claim would
    otherwise read as a dead process's. Once `stopping` holds (the worker stops; for one of a
    topic's events, `on_topic`, a rebalance is on too), :data:`HELD`: cut off, or not
    started."""
    stopping = stopping or Stopping()
    if stopping.holding_for(on_topic):
        return Delivered(HELD, "not started: the worker stops, or a rebalance is on")
    if request.id in _handing:
        return Delivered("sending", "being handed over by this process")
    _handing.add(request.id)
    try:
        return await _deliver(rt, channels, request, now, stopping, on_topic)
    finally:
        _handing.discard(request.id)


async def _deliver(rt: Runtime, channels: dict[str, Channel], request: DeliveryRequest,
                   now: datetime, stopping: Stopping, on_topic: bool) -> Delivered:
    taken = await _claim_patiently(rt, request, now, lambda: stopping.holding_for(on_topic))
    if taken in FINAL:
        await rt.redis.hdel(rt.keys.deliveries_pending(), request.id)
        return Delivered(taken, "already handled")
    if taken == "busy":
        return Delivered("sending", "being handed over by another worker")
    try:
        return await _send(rt, channels.get(request.channel), request, taken, now,
                           stopping, on_topic)
    except Exception:
        # Failed after the claim (Redis away while recording, say): released, so that
        # whichever worker gets the event again does not find it busy for as long as this
        # one lives. (Cut off by a stop it is not: the heartbeat's end covers that.)
        with contextlib.suppress(Exception):
            await release(rt, [request])
        raise


async def _send(rt: Runtime, channel: Channel | None, request: DeliveryRequest, taken: str,
                now: datetime, stopping: Stopping, on_topic: bool) -> Delivered:
    if channel is None:
        return await _finish(rt, request, Outcome("skipped", f"{request.channel} is not "
                                                  "configured"), now)
    # Whether it is still wanted (STOP, left, withdrawn, decided) is asked by the channel when
    # its turn comes (after the rate limit's wait): then a skip is recorded as such.
    orphan = taken.startswith("orphan|")  # with when it was first started, if known
    started = taken.removeprefix("orphan|") or None if orphan else now.isoformat()

    async def ask() -> bool:
        return not await skip_reason(rt, request, channel)

    run = SingleHandOver()
    stopping.watch(run, on_topic)
    try:
        outcome = await run.run(hand_over(rt, channel, request, orphan=orphan, started=started,
                                          wanted=run.wanted(ask), sleep=run.backoff))
    finally:
        stopping.forget(run)
    if outcome is None:
        await _give_back(rt, request, untouched=taken == "fresh" and not run.turned,
                         landing=run.cut_in_flight)
        return Delivered(HELD, "cut off by the worker's stop or a rebalance; given back")
    return await _finish(rt, request, outcome, now)


async def _give_back(rt: Runtime, request: DeliveryRequest, untouched: bool,
                     landing: bool = False) -> None:
    """The claim of a delivery the stop cut off: as if never claimed when nobody ever handed
    it over (`untouched`), else an orphan, looked for at the provider by the next claim;
    one cut off with the provider (`landing`), only once its request would have landed
    there (``handover.give_back_landing``). Redis away: it stays this worker's until its
    heartbeat ends."""
    try:
        if landing:
            await give_back_landing(rt, [request])
        else:
            await give_back(rt, [request], [untouched])
    except Exception as exc:
        log.warning("claim not given back at the stop: another worker takes it once this "
                    "one's heartbeat is gone", delivery=request.id, error=repr(exc))


async def _claim_patiently(rt: Runtime, request: DeliveryRequest, now: datetime,
                           holding: Callable[[], bool]) -> str:
    """Claim; while another live process is sending it (a rebalance hands the same event to
    two consumers, or the recovery round sent it again while that process waits out a
    provider's errors), wait up to :data:`BUSY_WAIT_S` for its outcome, or until `holding`
    (the worker stops, or a rebalance is on). Then `busy`: it is that process's to finish.
    Taking it over would send it twice once both attempts got through; should that process
    die, the delivery is still kept, and the recovery round's next try finds it an orphan
    (``dispatch.recovery``)."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        [taken] = await claim(rt, [request], request.channel, now)
        if taken != "busy" or time.monotonic() >= deadline or holding():
            return taken
        await asyncio.sleep(0.25)
        if holding():
            return taken


async def _finish(rt: Runtime, request: DeliveryRequest, outcome: Outcome, now: datetime
                  ) -> Delivered:
    """Record the outcome and its provider id, and apply a status callback that came
    before it, in one transaction (as a batch does)."""
    pid = callback_id(request.channel, outcome.provider_id)
    pairs = {pid: request.id} if pid else {}
    async with rt.redis.pipeline(transaction=True) as pipe:
        queue_outcome(pipe, rt, request, outcome, now)
        queue_provider_ids(pipe, rt.keys, pairs)
        queue_unconfirmed(pipe, rt, [(request, outcome)])
        early = queue_take_early(pipe, rt.keys, pairs, utcnow())
        replies = await pipe.execute()
    taken = taken_early(pairs, replies[-1]) if early else {}
    return Delivered(taken.get(request.id, outcome.status), outcome.detail)
