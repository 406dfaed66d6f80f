"""SMS whose status callbacks never came are asked of the provider: the real twilio SDK
against the sandbox (its callbacks off, as when the web was down), on a private
redis-server; the answers are applied as the callbacks would have been, counted once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest

from channels.base import OutboundMessage, StatusReport
from channels.sms import SmsChannel, TwilioAccount
from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch import batch_run
from coordinator.dispatch.handover import Outcome
from coordinator.dispatch.rate_limit import RateLimiter
from coordinator.dispatch.status_callbacks import record_statuses
from coordinator.dispatch.status_sweep import GIVE_UP_AFTER_S, sweep_statuses
from coordinator.events import DeliveryRequest, utcnow
from coordinator.runtime import Runtime
from coordinator.stuck_work import STATUS_GRACE_S, stuck_work
from sandbox.sms import SmsSandbox
from tests.integration.server_thread import ServerThread

pytestmark = pytest.mark.integration
SID, TOKEN = "AC" + "0" * 32, "sweep-token"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SmsSandbox, str]]:
    """The SMS sandbox, posting no status callbacks: every one of them is lost."""
    box = SmsSandbox(SID, TOKEN, callback_delay_s=0.01)
    box.callbacks = False
    with ServerThread(box.app) as server:
        yield box, server.url


def channel_for(rt: Runtime, url: str) -> SmsChannel:
    account = TwilioAccount(SID, TOKEN, from_number="+15005550006", base_url=url,
                            status_callback="http://127.0.0.1:9/hooks/twilio/status")
    return SmsChannel(account, RateLimiter(rt.redis, rt.keys.rate_bucket("sms", "t"), 1000.0))


def request_for(n: int, statement: str = "STM-00001-1") -> DeliveryRequest:
    return DeliveryRequest(id=f"d-{n}", channel="sms", recipient=f"+8490000000{n}",
                           text="Ngập sâu phố Kim Mã", purpose="statement",
                           statement_id=statement, subscriber_id=f"sub-{n}")


async def hand_over_and_record(rt: Runtime, channel: SmsChannel,
                               requests: list[DeliveryRequest]) -> list[str]:
    """Send each through the channel and record the outcomes as a batch does; the SIDs."""
    sids = []
    run = batch_run.BatchRun(rt, "STM-00001-1")
    run.add(requests)
    async with run.kept_up():
        for request in requests:
            await rt.redis.hset(rt.keys.delivery(request.id), "status", "sending")
            receipt = await channel.send(OutboundMessage(
                id=request.id, recipient=request.recipient, text=request.text))
            sids.append(receipt.provider_id)
            run.record(request, Outcome(receipt.status, receipt.provider_id,
                                        provider_id=receipt.provider_id))
    return sids


async def test_statuses_whose_callbacks_never_came_are_asked_and_counted_once(
        rt: Runtime, sandbox: tuple[SmsSandbox, str]) -> None:
    box, url = sandbox
    box.reset()
    box.fail_number("+84900000003", 30003)  # ends undelivered, with its error code
    channel = channel_for(rt, url)
    try:
        requests = [request_for(n) for n in (1, 2, 3)]
        sids = await hand_over_and_record(rt, channel, requests)
        statuses = [await rt.redis.hget(rt.keys.delivery(r.id), "status") for r in requests]
        assert statuses == ["queued"] * 3
        assert await rt.redis.zcard(rt.keys.unconfirmed()) == 3
        # A callback for d-2 did come after all: it leaves the set, nothing is asked.
        await record_statuses(rt.redis, rt.keys, [StatusUpdate(sids[1], "delivered", "")],
                              utcnow())
        assert await rt.redis.zrange(rt.keys.unconfirmed(), 0, -1) == ["d-1", "d-3"]
        await _settled_at_the_provider(box, sids)

        early = await sweep_statuses(rt, channel, utcnow())  # not due yet: untouched
        assert early.taken == 0
        later = utcnow() + timedelta(seconds=rt.settings.status_ask_after_s + 1)
        # `loa doctor`, a minute after they came due with no worker asking: stuck.
        overdue = later.timestamp() + STATUS_GRACE_S
        [stuck] = [s for s in await stuck_work(rt.redis, rt.keys, overdue)
                   if s.kind.startswith("SMS")]
        assert (stuck.kind, stuck.count) == ("SMS statuses not asked of the provider", 2)
        assert stuck.oldest_s == pytest.approx(STATUS_GRACE_S + 1, abs=1)
        swept = await sweep_statuses(rt, channel, later)

        assert (swept.moved, swept.waiting, swept.given_up) == (["d-1", "d-3"], [], [])
        assert [await rt.redis.hmget(rt.keys.delivery(r.id), ["status", "error_code"])
                for r in requests] == [["delivered", ""], ["delivered", ""],
                                       ["undelivered", "30003"]]
        ledger = await rt.redis.hgetall(rt.keys.dispatch("STM-00001-1"))
        assert (ledger["sms:sent"], ledger["sms:delivered"], ledger["sms:failed"]) == (
            "3", "2", "1")
        assert await rt.redis.zcard(rt.keys.unconfirmed()) == 0
        assert [s.kind for s in await stuck_work(rt.redis, rt.keys, overdue)] == [
            "audit entries not sealed"]  # no worker runs the sealer here
        # A late callback after the sweep changes nothing, counts nothing.
        await record_statuses(rt.redis, rt.keys, [StatusUpdate(sids[0], "delivered", "")],
                              utcnow())
        assert await rt.redis.hget(rt.keys.dispatch("STM-00001-1"), "sms:delivered") == "2"
    finally:
        await channel.close()


async def test_a_message_not_final_yet_is_asked_again_and_one_unknown_is_given_up(
        rt: Runtime) -> None:
    slow = SmsSandbox(SID, TOKEN, callback_delay_s=3600)  # stays `queued` at the provider
    slow.callbacks = False
    with ServerThread(slow.app) as server:
        channel = channel_for(rt, server.url)
        try:
            [sid] = await hand_over_and_record(rt, channel, [request_for(1, "STM-00002-1")])
            slow.reset()  # the provider forgets it: not found when asked
            [_] = await hand_over_and_record(rt, channel, [request_for(2, "STM-00002-1")])
            later = utcnow() + timedelta(seconds=rt.settings.status_ask_after_s + 1)
            swept = await sweep_statuses(rt, channel, later)
            assert (swept.moved, swept.waiting, swept.given_up) == ([], ["d-2"], ["d-1"])
            assert sid.startswith("SM")
            [(member, score)] = await rt.redis.zrange(rt.keys.unconfirmed(), 0, -1,
                                                      withscores=True)
            assert member == "d-2"  # asked again once twice as old (an interval on, here)
            assert score == pytest.approx(
                later.timestamp() + rt.settings.status_ask_after_s + 1, abs=2)
            # The provider refusing to answer (a wrong token): asked again after the
            # interval, and said.
            refused = SmsChannel(dataclasses.replace(channel.account, auth_token="wrong"))
            try:
                asked = await sweep_statuses(rt, refused, later + timedelta(days=1))
            finally:
                await refused.close()
            assert asked.unanswered == ["d-2"] and "20003" in asked.error
            assert await rt.redis.zscore(rt.keys.unconfirmed(), "d-2") == pytest.approx(
                (later + timedelta(days=1)).timestamp() + rt.settings.status_ask_after_s)
            assert await rt.redis.hget(rt.keys.delivery("d-2"), "status") == "queued"
            # Three days on, nobody asks any more: it stays as it was, out of the set.
            gone = later + timedelta(seconds=GIVE_UP_AFTER_S + rt.settings.status_ask_after_s)
            swept = await sweep_statuses(rt, channel, gone)
            assert (swept.waiting, swept.given_up) == ([], ["d-2"])
            assert await rt.redis.zcard(rt.keys.unconfirmed()) == 0
        finally:
            await channel.close()


class CallbackWhileAsked:
    """The real channel, but each message's own `delivered` callback comes (applied as the
    web applies it) while the sweep asks the provider about it."""

    def __init__(self, rt: Runtime, channel: SmsChannel) -> None:
        self.rt, self.channel = rt, channel

    async def status_of(self, provider_id: str) -> StatusReport | None:
        await record_statuses(self.rt.redis, self.rt.keys,
                              [StatusUpdate(provider_id, "delivered", "")], utcnow())
        return await self.channel.status_of(provider_id)


async def test_a_callback_that_comes_while_the_provider_is_asked_is_not_counted_as_moved(
        rt: Runtime, sandbox: tuple[SmsSandbox, str]) -> None:
    """The sweep read the record at `queued`; the callback then moved it to `delivered`;
    the provider's answer, `delivered` too, moves nothing more: the message is settled by
    its callback, not moved by the sweep, and counted delivered once."""
    box, url = sandbox
    box.reset()
    channel = channel_for(rt, url)
    try:
        sids = await hand_over_and_record(rt, channel, [request_for(1, "STM-00003-1")])
        await _settled_at_the_provider(box, sids)
        later = utcnow() + timedelta(seconds=rt.settings.status_ask_after_s + 1)
        swept = await sweep_statuses(rt, CallbackWhileAsked(rt, channel), later)
        assert (swept.moved, swept.settled, swept.waiting) == ([], ["d-1"], [])
        assert await rt.redis.hget(rt.keys.delivery("d-1"), "status") == "delivered"
        ledger = await rt.redis.hgetall(rt.keys.dispatch("STM-00003-1"))
        assert (ledger["sms:sent"], ledger["sms:delivered"]) == ("1", "1")
        assert await rt.redis.zcard(rt.keys.unconfirmed()) == 0
    finally:
        await channel.close()


async def _settled_at_the_provider(box: SmsSandbox, sids: list[str]) -> None:
    """Wait until the sandbox has moved each message to its ending."""
    for _ in range(200):
        if all(box._by_sid[s]["status"] in ("delivered", "undelivered") for s in sids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the sandbox did not finish the messages")
