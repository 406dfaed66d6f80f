"""`loa scheduler` on a real redis-server: with a broker it escalates a deadline on time; with
none to be reached it leaves the timers to the workers (it could escalate, but not send the
prompts that go with it). It seals the audit trail, and says so, so the workers leave that
to it while it runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.audit.sealer import sealed_elsewhere
from coordinator.broker import ensure_topics
from coordinator.embedded import free_port, start_tansu
from coordinator.events import AuditEvent, Severity
from coordinator.plan.planner import first_record
from coordinator.runtime import Runtime
from coordinator.state import record_audit

pytestmark = pytest.mark.integration
INCIDENT = "INC-77000001"


@asynccontextmanager
async def scheduler(rt: Runtime, log: Path, kafka_url: str, secret: str = "scheduler-secret"
                    ) -> AsyncIterator[Callable[[], str]]:
    """A `loa scheduler` process, alive (its heartbeat seen); its log's text. Without a
    `secret` (LOA_SECRET_KEY) it leaves the audit trail to the workers to seal."""
    env = {**os.environ, "LOA_REDIS_URL": rt.settings.redis_url or "",
           "LOA_REDIS_PREFIX": rt.keys.prefix, "LOA_KAFKA_URL": kafka_url,
           "LOA_LOG_FORMAT": "json", "LOA_SECRET_KEY": secret}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "scheduler"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not await rt.redis.exists(rt.keys.scheduler_heartbeat()):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            await asyncio.sleep(0.1)
        yield log.read_text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            stopped = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert stopped == 0, log.read_text()[-2000:]


async def pending_request(rt: Runtime, due_in_s: float) -> tuple[str, datetime]:
    """A pending approval request whose first deadline is `due_in_s` from now, stored as the
    planner stores it; its key and deadline."""
    record, _ = first_record(rt, rt.playbooks["flood"], Severity.severe, INCIDENT,
                             "DRF-77000001-1", datetime.now(UTC))
    due = datetime.now(UTC) + timedelta(seconds=due_in_s)
    record = record.evolve(due=due, request=record.request.model_copy(update={
        "deadline": due, "chain": [level.model_copy(update={"reminders": []})
                                   for level in record.request.chain]}))
    key = rt.keys.approval(record.request.id)
    await rt.redis.hset(key, mapping=record.to_hash())
    await rt.redis.zadd(rt.keys.approvals_pending(), {record.request.id: due.timestamp()})
    return key, due


async def test_the_scheduler_escalates_a_deadline_on_time(rt: Runtime, tmp_path: Path) -> None:
    broker = start_tansu(log_path=tmp_path / "broker.log")
    try:
        await ensure_topics(rt.settings.model_copy(update={"kafka_url": broker.url}))
        async with scheduler(rt, tmp_path / "scheduler.log", broker.url):
            approval, due = await pending_request(rt, 4.0)  # adopted within 2 s
            deadline = time.monotonic() + 20
            while await rt.redis.hget(approval, "level") == "1" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    finally:
        broker.stop()
    assert await rt.redis.hget(approval, "level") == "2"
    timeline = [json.loads(e) for e in await rt.redis.lrange(rt.keys.timeline(INCIDENT), 0, -1)]
    escalated = [e for e in timeline if e["action"] == "approval.escalated"]
    assert len(escalated) == 1
    late = (datetime.fromisoformat(escalated[0]["at"]) - due).total_seconds()
    assert 0 <= late < 0.5, f"{late:.3f} s late"


async def test_without_a_broker_the_scheduler_leaves_timers_to_the_workers(
        rt: Runtime, tmp_path: Path) -> None:
    async with scheduler(rt, tmp_path / "scheduler.log",
                         f"kafka://127.0.0.1:{free_port()}") as log:
        approval, _ = await pending_request(rt, 1.0)
        await asyncio.sleep(4.0)  # past the deadline, and two rounds of adoption
        assert await rt.redis.hget(approval, "level") == "1"
        assert "broker not reachable; timers are left to the workers" in log()


async def test_the_scheduler_seals_the_audit_trail_and_the_workers_leave_it_to_it(
        rt: Runtime, tmp_path: Path) -> None:
    async def audited(n: int) -> None:
        await record_audit(rt.redis, rt.keys, AuditEvent(
            at=datetime.now(UTC), actor="test", action="test.noted", interface="cli",
            incident_id=INCIDENT, subject=f"entry-{n}"))

    async def sealed_up_to_the_last() -> bool:
        [(last, _)] = await rt.redis.xrevrange(rt.keys.audit(), count=1)
        return await rt.redis.hget(rt.keys.audit_head(), "last") == last

    assert not await sealed_elsewhere(rt.redis, rt.keys)  # no scheduler: the workers seal
    async with scheduler(rt, tmp_path / "scheduler.log", f"kafka://127.0.0.1:{free_port()}"):
        await audited(1)
        await audited(2)
        deadline = time.monotonic() + 10
        # its word follows the batch's transaction: both are waited for
        while not (await sealed_up_to_the_last() and await sealed_elsewhere(rt.redis, rt.keys)):
            assert time.monotonic() < deadline, "the scheduler did not seal, or did not say so"
            await asyncio.sleep(0.1)
        assert await rt.redis.xlen(rt.keys.audit_links()) == 2
        assert await rt.redis.llen(rt.keys.incident_chain(INCIDENT)) == 2
    # Stopped: its word is taken back at once, not SEALER_MARK_S later.
    assert not await sealed_elsewhere(rt.redis, rt.keys)


async def test_without_a_secret_key_the_scheduler_leaves_sealing_to_the_workers(
        rt: Runtime, tmp_path: Path) -> None:
    async with scheduler(rt, tmp_path / "scheduler.log", f"kafka://127.0.0.1:{free_port()}",
                         secret="") as log:
        await asyncio.sleep(1.5)  # three sealing rounds, had it sealed
        assert not await sealed_elsewhere(rt.redis, rt.keys)
        assert "the audit trail is left to the workers to seal" in log()
