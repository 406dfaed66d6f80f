"""A single delivery (a prompt, a code, an alert) and the worker's stop or a rebalance: cut
off before it reaches the provider, its claim given back, and back on its topic; never
holding a partition for a provider's retries; and a prompt whose approval was decided
before its turn came, not handed over. Real Redis; the channels stand in for the provider,
to hold a message at its turn or with the provider exactly when the test says."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from channels.base import OutboundMessage, Receipt, TransientDeliveryError, still_wanted
from coordinator import topics
from coordinator.dispatch import stopping as stopping_module
from coordinator.dispatch.deliveries import HELD, deliver, keep_delivery
from coordinator.dispatch.handover import claim
from coordinator.dispatch.stopping import SingleHandOver, Stopping
from coordinator.events import DeliveryRequest, utcnow
from coordinator.pipeline import Pipeline
from coordinator.runtime import Runtime

pytestmark = pytest.mark.integration


def _prompt(name: str) -> DeliveryRequest:
    return DeliveryRequest(id=f"prompt:{name}", channel="sms", recipient="+84901000200",
                           text="Cần phê duyệt", purpose="prompt", person_id="an")


class _Provider:
    """An SMS channel. `turn`: the message's turn comes (else it waits for ever, as at a
    rate limit); `hold`: once its turn came it stays with the provider until `let_go`;
    `down`: every attempt ends in a transient error (so it waits, then tries again)."""

    name = "sms"
    max_length = None

    def __init__(self, turn: bool = True, hold: bool = False, down: bool = False) -> None:
        self.turn, self.hold, self.down = turn, hold, down
        self.attempts = 0
        self.with_provider = asyncio.Event()
        self.let_go = asyncio.Event()

    async def send(self, message: OutboundMessage) -> Receipt:
        if not self.turn:
            await asyncio.Event().wait()
        await still_wanted(message)
        self.attempts += 1
        self.with_provider.set()
        if self.hold:
            await self.let_go.wait()
        if self.down:
            raise TransientDeliveryError("sms: Twilio answered 503")
        return Receipt(message.id, f"SM{self.attempts}", "queued")

    async def close(self) -> None:
        return None


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout_s)


def _single(stopping: Stopping) -> SingleHandOver:
    [run] = [r for r in stopping.runs | stopping.beside if isinstance(r, SingleHandOver)]
    return run


async def test_a_rebalance_cuts_off_a_delivery_waiting_out_a_provider_that_is_down(
        rt: Runtime) -> None:
    """A prompt's SMS from `deliveries.sms`, its provider down: between two attempts (up to
    15.5 s of waits for six) a rebalance begins. The delivery ends at once, held, without
    another attempt, so its partition is given up within the rebalance's timeout; its
    claim is given back as possibly with the provider (an attempt was made), so the next
    claim looks for it there before sending."""
    request, channel, stopping = _prompt("down"), _Provider(down=True), Stopping()
    await keep_delivery(rt.redis, rt.keys, request)
    delivering = asyncio.create_task(deliver(rt, {"sms": channel}, request, utcnow(),
                                             stopping))
    await _until(lambda: bool(stopping.runs) and _single(stopping).retrying)
    assert stopping.pause() == 1
    at_the_pause, started = channel.attempts, time.monotonic()
    done = await asyncio.wait_for(delivering, 1)
    assert done.status == HELD and time.monotonic() - started < 0.5
    assert channel.attempts == at_the_pause and not stopping.runs  # not tried again
    row = await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert (row["status"], row["owner"]) == ("sending", "")
    [taken] = await claim(rt, [request], "sms", utcnow())
    assert taken.startswith("orphan|"), taken
    assert await rt.redis.hexists(rt.keys.deliveries_pending(), request.id)  # still kept


async def test_a_stop_cuts_off_a_delivery_waiting_for_its_turn_as_never_claimed(
        rt: Runtime) -> None:
    """The stop comes while a delivery waits for its turn (the rate limit): nothing reached
    the provider, so its claim is given back as if never made; the next claim is fresh."""
    request, channel, stopping = _prompt("turn"), _Provider(turn=False), Stopping()
    delivering = asyncio.create_task(deliver(rt, {"sms": channel}, request, utcnow(),
                                             stopping))
    await _until(lambda: bool(stopping.runs))
    await asyncio.sleep(0.05)  # at its turn's wait
    assert stopping.begin() == 1
    done = await asyncio.wait_for(delivering, 1)
    assert done.status == HELD and channel.attempts == 0
    assert "status" not in await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert await claim(rt, [request], "sms", utcnow()) == ["fresh"]


async def test_a_delivery_with_the_provider_ends_its_request_and_is_recorded(
        rt: Runtime) -> None:
    """The stop comes while the request is with the provider: answered within its grace,
    it ends as it would have, and its outcome is recorded (cutting it off could send it
    twice)."""
    request, channel, stopping = _prompt("inflight"), _Provider(hold=True), Stopping()
    delivering = asyncio.create_task(deliver(rt, {"sms": channel}, request, utcnow(),
                                             stopping))
    await asyncio.wait_for(channel.with_provider.wait(), 5)
    assert stopping.begin() == 1
    channel.let_go.set()
    done = await asyncio.wait_for(delivering, 5)
    assert done.status == "queued" and channel.attempts == 1
    assert await rt.redis.hget(rt.keys.delivery(request.id), "status") == "queued"


async def test_a_request_the_provider_never_answers_is_cut_off_after_its_grace(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebalance comes while the provider holds the request and never answers (the
    twilio SDK would wait 10 s, past the group's 6 s rebalance timeout): once its grace is
    over the delivery ends, held. That request may still land at the provider, so every
    claim of it, this very process's too, is `busy` until it would have (the SDK's timeout
    less the grace), and only then an orphan: looked for at the provider before it is
    sent."""
    monkeypatch.setattr(stopping_module, "IN_FLIGHT_GRACE_S", 0.3)
    fast = dataclasses.replace(rt, settings=rt.settings.model_copy(
        update={"twilio_timeout_s": 2.3}))  # it may land for 2 s after the cut
    other = dataclasses.replace(fast, instance="another-instance")
    request, channel, stopping = _prompt("hangs"), _Provider(hold=True), Stopping()
    await keep_delivery(rt.redis, rt.keys, request)
    delivering = asyncio.create_task(deliver(fast, {"sms": channel}, request, utcnow(),
                                             stopping))
    await asyncio.wait_for(channel.with_provider.wait(), 5)
    started = time.monotonic()
    assert stopping.pause() == 1
    done = await asyncio.wait_for(delivering, 5)
    cut_at = time.monotonic()
    assert done.status == HELD and cut_at - started >= 0.3
    assert channel.attempts == 1 and not stopping.runs
    row = await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert (row["status"], row["owner"]) == ("sending", "") and row["landing"]
    assert await claim(fast, [request], "sms", utcnow()) == ["busy"]  # this process too
    assert await claim(other, [request], "sms", utcnow()) == ["busy"]
    taken = "busy"
    while taken == "busy" and time.monotonic() - cut_at < 10:
        await asyncio.sleep(0.05)
        [taken] = await claim(other, [request], "sms", utcnow())
    assert taken.startswith("orphan|"), taken
    assert time.monotonic() - cut_at >= 1.8  # not before it would have landed


async def test_a_delivery_handed_over_at_once_holds_no_partition(rt: Runtime) -> None:
    """A prompt's SMS handed over at once, beside its handler, holds no partition: a
    rebalance leaves it be while it waits for its turn; the stop cuts it off."""
    request, channel, stopping = _prompt("beside"), _Provider(turn=False), Stopping()
    delivering = asyncio.create_task(deliver(rt, {"sms": channel}, request, utcnow(),
                                             stopping, on_topic=False))
    await _until(lambda: bool(stopping.beside))
    assert stopping.pause() == 0
    await asyncio.sleep(0.1)
    assert not delivering.done() and not _single(stopping).stopped
    assert stopping.begin() == 1
    assert (await asyncio.wait_for(delivering, 1)).status == HELD
    assert await claim(rt, [request], "sms", utcnow()) == ["fresh"]


async def test_a_rebalance_during_the_wait_for_another_workers_claim_ends_it(
        rt: Runtime) -> None:
    """The same event with two consumers in a rebalance: another live worker holds the
    delivery's claim, and this one waits for its outcome (up to 5 s). The rebalance ends
    that wait at once: it is the other worker's to finish, and this one sends nothing."""
    request, channel, stopping = _prompt("other"), _Provider(), Stopping()
    other = dataclasses.replace(rt, instance="instance-2")
    await rt.redis.set(rt.keys.worker_heartbeat(rt.settings.worker_id), "instance-2")
    assert await claim(other, [request], "sms", utcnow()) == ["fresh"]
    delivering = asyncio.create_task(deliver(rt, {"sms": channel}, request, utcnow(),
                                             stopping))
    await asyncio.sleep(0.3)
    assert not delivering.done()
    stopping.pause()
    done = await asyncio.wait_for(delivering, 1)
    assert done.status == "sending" and channel.attempts == 0


async def test_nothing_starts_while_a_rebalance_is_on(rt: Runtime) -> None:
    """A topic's delivery that comes while a rebalance is on is not claimed: held, for the
    partition's owner after it; one handed over at once goes on."""
    stopping = Stopping()
    stopping.pause()
    channel = _Provider()
    held = await deliver(rt, {"sms": channel}, _prompt("later"), utcnow(), stopping)
    assert held.status == HELD and channel.attempts == 0
    assert not await rt.redis.exists(rt.keys.delivery("prompt:later"))
    beside = await deliver(rt, {"sms": channel}, _prompt("now"), utcnow(), stopping,
                           on_topic=False)
    assert beside.status == "queued" and channel.attempts == 1


async def test_the_worker_puts_a_held_delivery_back_on_its_topic(rt: Runtime) -> None:
    """The pipeline's `deliver` (the agent of `deliveries.sms`) puts a delivery the
    rebalance cut off back on its topic, for the partition's owner after it."""
    sent: list[tuple[str, str, bytes]] = []

    async def broker(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        sent.append((spec.name, key, value))

    request, channel = _prompt("back"), _Provider(down=True)
    pipeline = Pipeline(rt, {"sms": channel}, broker, lambda _timer: None)  # type: ignore[dict-item]
    await keep_delivery(rt.redis, rt.keys, request)
    handling = asyncio.create_task(pipeline.deliver(request.to_bytes()))
    await _until(lambda: bool(pipeline.stopping.runs)
                 and _single(pipeline.stopping).retrying)
    pipeline.stopping.pause()
    await asyncio.wait_for(handling, 3)
    assert sent == [("deliveries.sms", request.id, request.to_bytes())]


async def test_a_prompt_whose_approval_was_decided_meanwhile_is_not_handed_over(
        rt: Runtime) -> None:
    """An approver answers while the other approver's request prompt still waits for its
    turn (the SMS rate limit, a provider that was down, a restart): that prompt is recorded
    `skipped`, not sent asking for an answer nobody can give any more. One that asks for no
    answer (`decided`) goes all the same."""
    await rt.redis.hset(rt.keys.approval("APR-00042-1"), "status", "approved")
    asking = DeliveryRequest(id="prompt:APR-00042-1:request:1:0:le-thi-thu-ha", channel="sms",
                             recipient="+84901000201", text="Cần phê duyệt", purpose="prompt",
                             person_id="le-thi-thu-ha", answer_for="APR-00042-1")
    telling = DeliveryRequest(id="prompt:APR-00042-1:decided:1:0:le-thi-thu-ha", channel="sms",
                              recipient="+84901000201", text="Đã quyết định", purpose="prompt",
                              person_id="le-thi-thu-ha")
    provider = _Provider()
    done = await deliver(rt, {"sms": provider}, asking, utcnow())
    assert (done.status, done.detail) == ("skipped", "approval APR-00042-1 already approved")
    assert provider.attempts == 0
    assert await rt.redis.hget(rt.keys.delivery(asking.id), "status") == "skipped"
    assert (await deliver(rt, {"sms": provider}, telling, utcnow())).status == "queued"
    assert provider.attempts == 1
