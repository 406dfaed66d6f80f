"""A batch's bookkeeping on a real redis-server: every outcome recorded while the batch runs
reaches the delivery's record, including one recorded while the writer's last round was busy
asking Redis who left (the race that once left a handed-over SMS in `sending` for good)."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.dispatch import batches
from coordinator.dispatch.handover import Outcome
from coordinator.events import DeliveryRequest
from coordinator.runtime import Runtime

pytestmark = pytest.mark.integration


class _HeldRefresh(batches._Run):
    """A batch whose refreshes wait until the test lets them go, so that an outcome can be
    recorded exactly while the writer's round is between its flush and its next check."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.refreshing = asyncio.Event()
        self.release = asyncio.Event()

    async def refresh(self, withdrawn_only: bool = False) -> None:
        self.refreshing.set()
        await self.release.wait()
        await super().refresh(withdrawn_only)


async def test_an_outcome_recorded_during_the_last_refresh_is_written(rt: Runtime) -> None:
    request = DeliveryRequest(id="d-1", channel="sms", recipient="+84900000001", text="x",
                              purpose="statement", statement_id="S-1", subscriber_id="sub-1")
    await rt.redis.hset(rt.keys.delivery(request.id), mapping={"status": "sending"})
    run = _HeldRefresh(rt, "S-1", [request])
    async with run.kept_up():
        await asyncio.wait_for(run.refreshing.wait(), 5)  # the writer's round is in refresh
        run.record(request, Outcome("sent", "", provider_id="SM1"))
        asyncio.get_running_loop().call_later(0.05, run.release.set)
    record = await rt.redis.hgetall(rt.keys.delivery(request.id))
    assert record["status"] == "sent"
    assert record["provider_id"] == "SM1"
    assert await rt.redis.hget(rt.keys.dispatch("S-1"), "sms:sent") == "1"
