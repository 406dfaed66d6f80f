"""Our SMS channel, with the real twilio SDK, against the sandbox: retries and errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from channels.base import (
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)
from channels.delivery import send_with_retries
from channels.sms import SmsChannel, TwilioAccount
from coordinator.dispatch.handover import hand_over
from coordinator.dispatch.rate_limit import RateLimiter
from coordinator.embedded import Service
from coordinator.events import DeliveryRequest
from coordinator.runtime import Runtime
from coordinator.state import Redis, connect
from sandbox.sms import SmsSandbox
from tests.integration.server_thread import ServerThread

pytestmark = pytest.mark.integration
SID, TOKEN = "AC" + "0" * 32, "channel-token"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SmsSandbox, str]]:
    box = SmsSandbox(SID, TOKEN, callback_delay_s=0.01)
    with ServerThread(box.app) as server:
        yield box, server.url


def channel_for(url: str, redis: Redis, bucket: str) -> SmsChannel:
    """Our SMS channel aimed at the sandbox, with a Redis rate limit (1000/s)."""
    account = TwilioAccount(SID, TOKEN, from_number="+15005550006", base_url=url,
                            status_callback="http://127.0.0.1:9/hooks/twilio/status")
    return SmsChannel(account, RateLimiter(redis, bucket, 1000.0))


async def test_429_then_500_then_accepted_sends_one_message(
        sandbox: tuple[SmsSandbox, str], redis_server: Service) -> None:
    """Two retryable answers, then success: exactly one message at the provider."""
    box, url = sandbox
    box.reset()
    box.throttle(429, 1)
    box.throttle(500, 1)
    redis = connect(redis_server.url)
    channel = channel_for(url, redis, "t1:rate:sms")
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    try:
        receipt = await send_with_retries(channel, OutboundMessage(
            id="d1", recipient="+84901234567", text="Cảnh báo"), attempts=5, sleep=no_wait)
    finally:
        await channel.close()
        await redis.aclose()
    assert len(waits) == 2
    assert [m["to"] for m in box.messages] == ["+84901234567"]
    assert receipt.provider_id == box.messages[0]["sid"]


async def test_a_permanent_error_fails_at_once(sandbox: tuple[SmsSandbox, str],
                                               redis_server: Service) -> None:
    """An invalid number (Twilio 21211) is not retried: no backoff, nothing sent."""
    box, url = sandbox
    box.reset()
    redis = connect(redis_server.url)
    channel = channel_for(url, redis, "t2:rate:sms")
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    try:
        with pytest.raises(PermanentDeliveryError, match="21211"):
            await send_with_retries(channel, OutboundMessage(
                id="d2", recipient="+1", text="x"), attempts=5, sleep=no_wait)
    finally:
        await channel.close()
        await redis.aclose()
    assert waits == [] and box.messages == []


async def test_a_message_sent_before_a_crash_is_found_with_when_twilio_took_it(
        sandbox: tuple[SmsSandbox, str], redis_server: Service) -> None:
    """Reconciling an interrupted attempt finds the message Twilio took (same number and
    body, created since the attempt began), with Twilio's own creation time: the record
    says when it was handed over, not when the worker came back and asked. With no start
    known (since the beginning of time) it is found too, not an OverflowError."""
    box, url = sandbox
    box.reset()
    redis = connect(redis_server.url)
    channel = channel_for(url, redis, "t3:rate:sms")
    message = OutboundMessage(id="d3", recipient="+84901234568", text="Ngập sâu ở Giảng Võ")
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        sent = await channel.send(message)
        found = await channel.reconcile(message, before)
        other = await channel.reconcile(OutboundMessage(
            id="d4", recipient="+84901234568", text="Another text"), before)
        no_start = await channel.reconcile(message, datetime.min.replace(tzinfo=UTC))
    finally:
        await channel.close()
        await redis.aclose()
    assert found is not None and other is None
    assert found.provider_id == sent.provider_id
    assert no_start is not None and no_start.provider_id == sent.provider_id
    assert found.taken_at is not None
    assert before <= found.taken_at <= datetime.now(UTC)


async def test_an_orphan_found_at_twilio_is_recorded_at_twilios_time(
        sandbox: tuple[SmsSandbox, str], rt: Runtime) -> None:
    """A delivery cut off after Twilio took it: taken over, it is found, not sent again,
    and its outcome carries Twilio's creation time (whole seconds, before the take-over)."""
    box, url = sandbox
    box.reset()
    channel = channel_for(url, rt.redis, "t5:rate:sms")
    request = DeliveryRequest(id="d5", channel="sms", recipient="+84901234569",
                              text="Ngập sâu ở Giảng Võ", purpose="statement")
    started = datetime.now(UTC).replace(microsecond=0)
    try:
        await channel.send(OutboundMessage(id="d5", recipient=request.recipient,
                                           text=request.text))
        await asyncio.sleep(1.1)  # the take-over comes a second later, at least
        taken_over = datetime.now(UTC)
        outcome = await hand_over(rt, channel, request, orphan=True,
                                  started=started.isoformat(), wanted=None)
    finally:
        await channel.close()
    assert outcome.status in ("queued", "sent", "delivered")
    assert len(box.messages) == 1  # found, not sent again
    assert outcome.at is not None
    assert started <= outcome.at < taken_over


class LooksFailFirst(SmsChannel):
    """Our SMS channel, whose first `failures` looks for a message find Twilio away."""

    def __init__(self, account: TwilioAccount, limiter: RateLimiter, failures: int) -> None:
        super().__init__(account, limiter)
        self.failures = failures

    async def reconcile(self, message: OutboundMessage, since: datetime) -> Receipt | None:
        if self.failures:
            self.failures -= 1
            raise TransientDeliveryError("sms: Twilio not reachable: the look timed out")
        return await super().reconcile(message, since)


async def test_an_orphan_whose_look_fails_is_not_sent_blind(
        sandbox: tuple[SmsSandbox, str], rt: Runtime) -> None:
    """A delivery Twilio took before the crash, taken over while Twilio cannot answer the
    look: the looks are retried, not read as "not found", and the message stays one at
    Twilio (a failed look used to count as not found, and it was sent twice)."""
    box, url = sandbox
    box.reset()
    plain = channel_for(url, rt.redis, "t6:rate:sms")
    channel = LooksFailFirst(plain.account, RateLimiter(rt.redis, "t6:rate:sms", 1000.0), 2)
    request = DeliveryRequest(id="d6", channel="sms", recipient="+84901234570",
                              text="Ngập sâu ở Giảng Võ", purpose="statement")
    started = datetime.now(UTC).replace(microsecond=0)
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    try:
        await plain.send(OutboundMessage(id="d6", recipient=request.recipient,
                                         text=request.text))
        outcome = await hand_over(rt, channel, request, orphan=True,
                                  started=started.isoformat(), wanted=None, sleep=no_wait)
    finally:
        await plain.close()
        await channel.close()
    assert len(box.messages) == 1, "sent again after a look that failed"
    assert (channel.failures, len(waits)) == (0, 2)
    assert outcome.provider_id == box.messages[0]["sid"]


async def test_a_twilio_that_never_answers_fails_in_time_and_is_retried_then_given_up(
        redis_server: Service) -> None:
    """A server that takes the connection and the request and never answers: a send, a
    look for a message and a status question each fail as transient after the account's
    timeout (the SDK's asynchronous client set no limit, and the hand-over waited for
    good); a send with retries tries twice and gives up."""
    handlers: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(writer)
        await reader.read(65536)  # the request, never answered
        await asyncio.sleep(3600)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = connect(redis_server.url)
    account = TwilioAccount(SID, TOKEN, from_number="+15005550006",
                            base_url=f"http://127.0.0.1:{port}", timeout_s=0.3)
    channel = SmsChannel(account, RateLimiter(redis, "t-silent:rate:sms", 1000.0))
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    message = OutboundMessage(id="silent-1", recipient="+84901234567", text="Cảnh báo")
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(TransientDeliveryError, match="not reachable"):
            await asyncio.wait_for(channel.send(message), 5)
        assert asyncio.get_running_loop().time() - started < 2  # the timeout, not for good
        with pytest.raises(TransientDeliveryError, match="not reachable"):
            await asyncio.wait_for(channel.reconcile(message, datetime.now(UTC)), 5)
        with pytest.raises(TransientDeliveryError, match="not reachable"):
            await asyncio.wait_for(channel.status_of("SM" + "0" * 32), 5)
        with pytest.raises(TransientDeliveryError):
            await asyncio.wait_for(send_with_retries(channel, message, attempts=2,
                                                     sleep=no_wait), 5)
    finally:
        await channel.close()
        await redis.aclose()
        server.close()
        for writer in writers:
            writer.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
    assert len(waits) == 1
    assert len(handlers) == 5  # a send, a look, a question, and the two attempts

