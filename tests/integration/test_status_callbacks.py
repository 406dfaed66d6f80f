"""Provider status callbacks applied in batches, on a private redis-server: each moves its
delivery forward only, counts it once in its statement's ledger, and one that comes before
its send is kept for it."""

from __future__ import annotations

import asyncio

import pytest

from channels.twilio_webhooks import StatusUpdate, status_update
from coordinator.dispatch.provider_ids import PROVIDER_IDS_KEPT_S
from coordinator.dispatch.status_callbacks import StatusCallbacks, record_statuses
from coordinator.embedded import Service
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import connect

pytestmark = pytest.mark.integration
KEYS = Keys("cbtest")


def test_callbacks_arriving_together_are_written_together(redis_server: Service) -> None:
    async def scenario() -> None:
        redis = connect(redis_server.url)
        try:
            await redis.flushdb()
            for n in range(1, 201):  # 200 SMS of one statement, handed over ("sent")
                await redis.hset(KEYS.delivery(f"d{n}"), mapping={
                    "status": "sent", "statement_id": "STM-00001-1", "channel": "sms"})
                await redis.set(KEYS.provider_message(f"SM{n}"), f"d{n}")
            await redis.hset(KEYS.delivery("prompt"), mapping={"status": "sent"})  # no ledger
            await redis.set(KEYS.provider_message("SMP"), "prompt")
            await redis.hset(KEYS.dispatch("STM-00001-1"), "sms:sent", 200)
            await redis.script_flush()  # a Redis that never saw the script: it is loaded
            before = await redis.info("commandstats")
            callbacks = StatusCallbacks(redis, KEYS, most=150)
            updates = [StatusUpdate(f"SM{n}", "delivered" if n % 4 else "undelivered", "")
                       for n in range(1, 201)]
            updates += [StatusUpdate("SM1", "sent", ""),  # late: never moves back
                        StatusUpdate("SM2", "delivered", ""),  # twice: counted once
                        StatusUpdate("SMP", "delivered", "30003"),
                        StatusUpdate("SM999", "delivered", "")]  # before its send
            ids = await asyncio.gather(*(callbacks.record(u) for u in updates))
            after = await redis.info("commandstats")

            assert ids[:3] == ["d1", "d2", "d3"] and ids[-2:] == ["prompt", None]
            assert callbacks.batches == 2  # 204 callbacks, at most 150 a batch
            def calls(stats: dict[str, dict[str, int]], command: str) -> int:
                row = stats.get(f"cmdstat_{command}", {})
                return row.get("calls", 0) - row.get("failed_calls", 0)

            # one script run for each callback, by its SHA1: the text went over once
            # (SCRIPT LOAD, in the first batch or after a NOSCRIPT)
            assert calls(after, "evalsha") - calls(before, "evalsha") == 204
            assert calls(after, "eval") - calls(before, "eval") == 0
            assert calls(after, "script|load") - calls(before, "script|load") == 1
            assert await redis.hgetall(KEYS.dispatch("STM-00001-1")) == {
                "sms:sent": "200", "sms:delivered": "150", "sms:failed": "50"}
            assert await redis.hget(KEYS.delivery("d1"), "status") == "delivered"
            assert await redis.hget(KEYS.delivery("d4"), "status") == "undelivered"
            assert await redis.hmget(KEYS.delivery("prompt"), ["status", "error_code"]) == [
                "delivered", "30003"]
            assert await redis.hget(KEYS.early_callbacks(), "SM999") == "delivered|"
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_a_redis_error_reaches_every_caller_of_the_batch(redis_server: Service) -> None:
    async def scenario() -> None:
        broken = connect("redis://127.0.0.1:1/0")  # nothing listens: the provider retries
        try:
            callbacks = StatusCallbacks(broken, KEYS)
            answers = await asyncio.gather(
                *(callbacks.record(StatusUpdate(f"SM{n}", "delivered", "")) for n in range(3)),
                return_exceptions=True)
            assert all(isinstance(a, Exception) for a in answers), answers
            assert callbacks._writing is None  # and the next callback starts a new batch
        finally:
            await broken.aclose()

    asyncio.run(scenario())


def test_of_two_callbacks_before_the_send_the_further_status_is_kept(
        redis_server: Service) -> None:
    """`delivered`, then a late `sent`, both before the send is recorded: `delivered` waits
    for the send's record (a week at most); the send's transaction takes it."""
    async def scenario() -> tuple[str | None, int, list[str | None]]:
        redis = connect(redis_server.url)
        try:
            await redis.flushdb()
            now = utcnow()
            ids = [*await record_statuses(redis, KEYS, [StatusUpdate("SMX", "delivered", "")],
                                          now),
                   *await record_statuses(redis, KEYS, [StatusUpdate("SMX", "sent", "")],
                                          now)]
            return (await redis.hget(KEYS.early_callbacks(), "SMX"),
                    await redis.ttl(KEYS.early_callbacks()), ids)
        finally:
            await redis.aclose()

    kept, ttl, ids = asyncio.run(scenario())
    assert (kept, ids) == ("delivered|", [None, None])
    assert PROVIDER_IDS_KEPT_S - 5 <= ttl <= PROVIDER_IDS_KEPT_S


def test_a_callback_of_the_same_rank_changes_nothing(redis_server: Service) -> None:
    """After the hand-over's `queued`: `sending` (rank 0 too) does not make the delivery
    non-final again; `delivered` moves it on; a second ending, `undelivered`, does not undo
    it. Each counted once: sent by the hand-over, delivered by the callback."""
    async def scenario() -> tuple[str | None, dict[str, str]]:
        redis = connect(redis_server.url)
        try:
            await redis.flushdb()
            await redis.hset(KEYS.delivery("dq"), mapping={
                "status": "queued", "statement_id": "STM-00002-1", "channel": "sms"})
            await redis.set(KEYS.provider_message("SMQ"), "dq")
            await redis.hset(KEYS.dispatch("STM-00002-1"), "sms:sent", 1)
            for status in ("sending", "delivered", "undelivered"):
                await record_statuses(redis, KEYS, [StatusUpdate("SMQ", status, "")], utcnow())
            return (await redis.hget(KEYS.delivery("dq"), "status"),
                    await redis.hgetall(KEYS.dispatch("STM-00002-1")))
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()) == ("delivered", {"sms:sent": "1", "sms:delivered": "1"})


def test_a_read_receipt_or_a_cancel_ends_a_delivery_once(redis_server: Service) -> None:
    """Twilio's `read` before its `delivered` (out of order) ends the delivery as delivered,
    counted once; `canceled` ends another as failed; neither is asked about again (out of
    the SMS awaiting a final status). Both as the callback's form gives them."""
    async def scenario() -> tuple[list[str | None], dict[str, str], int]:
        redis = connect(redis_server.url)
        try:
            await redis.flushdb()
            for delivery, sid in (("dr", "SMR"), ("dc", "SMC")):
                await redis.hset(KEYS.delivery(delivery), mapping={
                    "status": "queued", "statement_id": "STM-00003-1", "channel": "sms"})
                await redis.set(KEYS.provider_message(sid), delivery)
                await redis.zadd(KEYS.unconfirmed(), {delivery: 1.0})
            await redis.hset(KEYS.dispatch("STM-00003-1"), "sms:sent", 2)
            for sid, status in (("SMR", "read"), ("SMR", "delivered"), ("SMC", "canceled")):
                update = status_update({"MessageSid": sid, "MessageStatus": status})
                await record_statuses(redis, KEYS, [update], utcnow())
            return ([await redis.hget(KEYS.delivery(d), "status") for d in ("dr", "dc")],
                    await redis.hgetall(KEYS.dispatch("STM-00003-1")),
                    await redis.zcard(KEYS.unconfirmed()))
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()) == (["delivered", "failed"], {
        "sms:sent": "2", "sms:delivered": "1", "sms:failed": "1"}, 0)
