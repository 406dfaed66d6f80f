"""The SMS rate limit is shared through a real Redis by every worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.base import BaseChannel, OutboundMessage, Receipt, Withdrawn, still_wanted
from coordinator.dispatch.rate_limit import RateLimiter, lane_reserve
from coordinator.embedded import Service, start_redis
from coordinator.state import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    service: Service = start_redis(tmp_path / "redis", appendonly=False)
    try:
        yield service.url
    finally:
        service.stop()


async def test_two_workers_share_one_rate(redis_url: str) -> None:
    """Two limiters on the same bucket at 20/s: 40 sends take at least 1.9 s between them
    (a lower bound only: a slow machine can only make it slower)."""
    clients = [connect(redis_url), connect(redis_url)]
    limiters = [RateLimiter(c, "loatest:rate:sms:+15005550006", rate=20, burst=1)
                for c in clients]
    started = time.monotonic()

    granted: list[float] = []

    async def worker(limiter: RateLimiter) -> int:
        for _ in range(20):
            await limiter.acquire()
            granted.append(time.monotonic())
        return 20

    try:
        sent = await asyncio.gather(*(worker(limiter) for limiter in limiters))
    finally:
        for c in clients:
            await c.aclose()
    assert sum(sent) == 40
    assert time.monotonic() - started >= 1.9
    # Over any 1-second window, never more than the rate (plus the one-token burst).
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert busiest <= 21


class _Counted(BaseChannel):
    """An SMS channel behind a rate limit that counts what it hands over, and when."""

    name = "sms"

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__(limiter)
        self.handed: list[tuple[str, float]] = []

    async def hand_over(self, message: OutboundMessage) -> Receipt:
        await still_wanted(message)
        self.handed.append((message.id, time.monotonic()))
        return Receipt(message.id, f"SM{len(self.handed)}", "queued")


async def test_a_turn_not_used_goes_to_the_next_message_at_once(redis_url: str) -> None:
    """At 2 SMS a second, ten messages wait in line; the eight in the middle are no longer
    wanted when their turn comes (a statement withdrawn). Their turns go to whoever is next,
    so the last message is handed over about one turn after the first, not nine turns (4.5
    s) later, and no more than two turns' worth go out."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:giveback", rate=2, burst=1)
    channel = _Counted(limiter)

    async def unwanted() -> bool:
        return False

    messages = [OutboundMessage(id=f"m{i}", recipient="+84901000001", text="x",
                                wanted=None if i in (0, 9) else unwanted) for i in range(10)]

    async def send(message: OutboundMessage) -> str:
        try:
            await channel.send(message)
        except Withdrawn:
            return "skipped"
        return "sent"

    started = time.monotonic()
    try:
        outcomes = await asyncio.gather(*(send(m) for m in messages))
    finally:
        await limiter.close()
        await client.aclose()
    assert outcomes == ["sent"] + ["skipped"] * 8 + ["sent"]
    [(_, first), (last_id, last)] = channel.handed
    assert last_id == "m9"
    assert last - started < 2.0, last - started  # 4.5 s and more when each skip takes a turn
    assert last - first >= 0.4  # ... yet the second send waited for its own turn


async def test_a_prompt_does_not_wait_behind_a_fan_out(redis_url: str) -> None:
    """A fan-out (the bulk lane, 20 senders) keeps a 5/s bucket drained; a prompt (the
    priority lane) still gets a token within one token's time (0.2 s), while the bulk lane
    never takes the reserve: it waits for tokens above it."""
    client = connect(redis_url)
    key = "loatest:rate:sms:lanes"
    bulk = RateLimiter(client, key, rate=5, reserve=lane_reserve(5))
    prompt = RateLimiter(client, key, rate=5)
    stop = asyncio.Event()
    bulk_grants: list[float] = []

    async def fan_out() -> None:
        while not stop.is_set():
            await bulk.acquire()
            bulk_grants.append(time.monotonic())

    senders = [asyncio.create_task(fan_out()) for _ in range(20)]
    try:
        await asyncio.sleep(2.5)  # the burst is spent; the bulk lane now takes what refills
        asked = time.monotonic()
        await prompt.acquire()
        waited = time.monotonic() - asked
    finally:
        stop.set()
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        await client.aclose()
    assert (lane_reserve(5), bulk.burst) == (1.0, 6.0)
    assert waited < 0.2, waited
    # 2.5 s at 5/s on a bucket of 6 with 1 held back: at most 5 (burst) + 12.5 refill.
    assert 10 <= len(bulk_grants) <= 18


async def test_callers_of_one_limiter_share_its_round_trips(redis_url: str) -> None:
    """A hundred sends of one fan-out wait on one limiter: one task asks Redis for them,
    for up to `take` tokens (20 at 1,000/s) at a time, so a hundred tokens cost five script
    runs and one asked ahead, not a hundred."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:turns", rate=1000)
    async def runs() -> int:  # scripts run: by SHA1, or by text when not loaded yet
        stats = await client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0)
                   - stats.get(f"cmdstat_{c}", {}).get("failed_calls", 0)
                   for c in ("evalsha", "eval"))

    try:
        before = await runs()
        await asyncio.gather(*(limiter.acquire() for _ in range(100)))
        assert limiter._asker is not None  # the ask ahead for the next sends
        await limiter._asker
        after = await runs()
    finally:
        await client.aclose()
    assert limiter.take == 20
    assert after - before == 6
    assert limiter._held == 20  # what the ask ahead took waits for the next sends


async def test_an_ask_ahead_cut_off_before_it_began_leaves_no_one_waiting(
        redis_url: str) -> None:
    """The asker is a task; cancelled before its first step, its own code never runs.
    The limiter still answers the next callers."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:cut", rate=1000)
    try:
        for _ in range(11):  # 20 taken, 9 left: the next ask has begun, not yet run
            await limiter.acquire()
        ahead = limiter._asker
        assert ahead is not None
        ahead.cancel()
        await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(30))), 5)
    finally:
        await client.aclose()
    assert ahead.cancelled()


async def test_tokens_held_too_long_are_given_up_and_closing_stops_asking_ahead(
        redis_url: str) -> None:
    """Tokens taken and not used within HELD_FOR_S are not used later (on top of a refilled
    bucket they would let a burst past the shared rate): the next send asks the bucket
    again. Closing cancels the ask ahead, which would outlive the worker's event loop."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:held", rate=1000)
    try:
        started = time.monotonic()
        await limiter.acquire()
        assert limiter._held == 19
        limiter._held_until = time.monotonic() - 0.001  # as if taken HELD_FOR_S ago
        await limiter.acquire()
        took_s = time.monotonic() - started
        assert limiter._held == 19  # the old 19 given up, 20 fresh ones taken
        state = await client.hgetall("loatest:rate:sms:held")
        # Two takes of 20 from the full bucket, less what refilled meanwhile (at 1,000/s a
        # slow machine's 30 ms between them is 30 tokens).
        assert float(state["tokens"]) <= limiter.burst - 40 + limiter.rate * took_s + 1
        for _ in range(10):  # 9 held: the next ask has begun, not yet run
            await limiter.acquire()
        ahead = limiter._asker
        assert ahead is not None
        await limiter.close()
        assert ahead.cancelled()
        assert (limiter._asker, limiter._held) == (None, 0)
        for _ in range(20):  # a send still under way takes tokens as it asks, never ahead
            await limiter.acquire()
        assert limiter._asker is None
    finally:
        await client.aclose()


async def test_callers_are_served_in_the_order_they_came(redis_url: str) -> None:
    """At 20/s with a one-token bucket, thirty callers get their tokens first come first
    served, each woken only with its own token: no caller is overtaken."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:line", rate=20, burst=1)
    served: list[int] = []

    async def caller(n: int) -> None:
        await limiter.acquire()
        served.append(n)

    try:
        callers = []
        for n in range(30):
            callers.append(asyncio.create_task(caller(n)))
            await asyncio.sleep(0)  # each in line before the next comes
        await asyncio.wait_for(asyncio.gather(*callers), 10)
    finally:
        await client.aclose()
    assert served == list(range(30))


class _Steps(Coroutine[Any, Any, None]):
    """A coroutine that counts the times its task runs it: each is one wake-up."""

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro, self.steps = coro, 0

    def send(self, value: Any) -> Any:
        self.steps += 1
        return self.coro.send(value)

    def throw(self, *args: Any) -> Any:  # type: ignore[override]
        self.steps += 1
        return self.coro.throw(*args)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, None, None]:
        return self.coro.__await__()


async def test_a_caller_in_line_is_woken_only_with_its_token(redis_url: str) -> None:
    """Forty sends wait on a 300/s bulk lane, which answers six tokens at a time: each
    caller is run twice (to get in line, then with its token), not woken by every answer
    to find the tokens gone (at 300/s, that cost a tenth of a core)."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:woken", rate=300, reserve=lane_reserve(300))
    callers = [_Steps(limiter.acquire()) for _ in range(40)]
    try:
        await asyncio.wait_for(asyncio.gather(*(asyncio.ensure_future(c) for c in callers)), 10)
    finally:
        await client.aclose()
    assert limiter.take == 6
    assert max(c.steps for c in callers) == 2, sorted(c.steps for c in callers)


async def test_a_caller_cut_off_as_its_token_comes_gives_it_to_the_next(
        redis_url: str) -> None:
    """A send cancelled just as the asker hands it a token (before it runs again) leaves
    that token to the next caller in line: the bucket grants three tokens for the three
    callers served, and none is left held."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:cut-line", rate=10, burst=1)
    granted: list[int] = []
    ask, hand_out = limiter._ask_bucket, limiter._hand_out

    async def counted(want: int) -> tuple[int, int]:
        answer = await ask(want)
        granted.append(answer[1])
        return answer

    served: list[int] = []
    waiting: list[asyncio.Task[None]] = []

    def cut_off_first() -> None:  # the first caller is cancelled as its token comes
        first_turn = limiter._line[0] if limiter._line else None
        hand_out()
        if first_turn is not None and first_turn.done() and not waiting[0].done():
            waiting[0].cancel()

    async def caller(n: int) -> None:
        await limiter.acquire()
        served.append(n)

    try:
        await limiter.acquire()  # the bucket's one token: the others wait for refills
        limiter._ask_bucket = counted  # type: ignore[method-assign]
        limiter._hand_out = cut_off_first  # type: ignore[method-assign]
        waiting += [asyncio.create_task(caller(n)) for n in range(3)]
        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*waiting[1:]), 5)
    finally:
        await client.aclose()
    assert waiting[0].cancelled()
    assert served == [1, 2]
    assert sum(granted) == 2  # the two refills; the first token was taken before counting
    assert limiter._held == 0 and not limiter._live_line()


async def test_callers_in_line_when_the_asker_is_cancelled_ask_for_themselves(
        redis_url: str) -> None:
    """Whoever cancels the asker while sends wait in line, they are not left waiting: each
    asks the bucket for itself."""
    client = connect(redis_url)
    limiter = RateLimiter(client, "loatest:rate:sms:asker-cut", rate=10, burst=1)
    try:
        await limiter.acquire()  # the bucket's one token: the others wait for refills
        waiting = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert limiter._asker is not None
        limiter._asker.cancel()
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
    finally:
        await client.aclose()
    assert not limiter._line


async def test_a_failed_ask_fails_every_caller_in_line(tmp_path: Path) -> None:
    """With Redis gone, every caller waiting in line gets the error (its send decides
    whether to try again); none is left waiting for ever."""
    service: Service = start_redis(tmp_path / "gone", appendonly=False)
    client = connect(service.url)
    limiter = RateLimiter(client, "loatest:rate:sms:gone", rate=1000)
    service.stop()
    try:
        results = await asyncio.wait_for(asyncio.gather(
            *(limiter.acquire() for _ in range(5)), return_exceptions=True), 30)
    finally:
        await client.aclose()
    assert all(isinstance(r, Exception) for r in results), results
    assert not limiter._live_line()


def test_a_limiter_outlives_the_event_loop_it_was_used_in(redis_url: str) -> None:
    """A limiter used in one event loop, closed while its asker and a caller were waiting,
    still serves callers in the next loop (with a Redis client of that loop)."""
    limiter = RateLimiter(None, "loatest:rate:sms:loops", rate=10, burst=1)  # type: ignore[arg-type]

    async def first() -> None:
        limiter.redis = connect(redis_url)
        await limiter.acquire()  # the bucket's one token
        asyncio.get_running_loop().create_task(limiter.acquire())  # waits for a refill
        await asyncio.sleep(0.01)  # the asker is asleep until then; the loop ends here
        await limiter.redis.aclose()

    async def second() -> int:
        limiter.redis = connect(redis_url)
        try:
            await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(2))), 5)
        finally:
            await limiter.redis.aclose()
        return len(limiter._line)

    ended = asyncio.new_event_loop()
    try:
        ended.run_until_complete(first())
    finally:
        ended.close()  # closed with its tasks pending, not cancelled
    assert limiter._asker is not None and not limiter._asker.done()
    assert asyncio.run(second()) == 0
