"""`loa scheduler` on a real redis-server, with no broker to be reached: timers fire all the
same, and what an escalation sends waits in the outbox for a worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.embedded import free_port
from coordinator.events import Severity
from coordinator.plan.planner import first_record
from coordinator.runtime import Runtime

pytestmark = pytest.mark.integration


async def test_a_deadline_fires_without_a_broker(rt: Runtime, tmp_path: Path) -> None:
    playbook = rt.playbooks["flood"]
    record, _ = first_record(rt, playbook, Severity.severe, "INC-77000001", "DRF-77000001-1",
                             datetime.now(UTC))
    due = datetime.now(UTC) + timedelta(seconds=3)
    record = record.evolve(due=due, request=record.request.model_copy(update={
        "deadline": due, "chain": [level.model_copy(update={"reminders": []})
                                   for level in record.request.chain]}))
    approval = rt.keys.approval(record.request.id)
    await rt.redis.hset(approval, mapping=record.to_hash())
    await rt.redis.zadd(rt.keys.approvals_pending(), {record.request.id: due.timestamp()})
    env = {**os.environ, "LOA_REDIS_URL": rt.settings.redis_url or "",
           "LOA_REDIS_PREFIX": rt.keys.prefix, "LOA_KAFKA_URL": f"kafka://127.0.0.1:{free_port()}",
           "LOA_LOG_FORMAT": "json"}
    with open(tmp_path / "scheduler.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "scheduler"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while await rt.redis.hget(approval, "level") == "1" and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()[-2000:]
            await asyncio.sleep(0.2)
        assert await rt.redis.hget(approval, "level") == "2"
        timeline = [json.loads(e) for e in await rt.redis.lrange(
            rt.keys.timeline("INC-77000001"), 0, -1)]
        escalated = [e for e in timeline if e["action"] == "approval.escalated"]
        assert len(escalated) == 1
        late = (datetime.fromisoformat(escalated[0]["at"]) - due).total_seconds()
        assert 0 <= late < 1.0
        # the level-2 prompts are kept for a worker to send (no broker took them)
        kept = await rt.redis.hkeys(rt.keys.followups())
        assert any(k.startswith(f"prompt:{record.request.id}:") for k in kept), kept
        assert await rt.redis.exists(rt.keys.scheduler_heartbeat())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "scheduler.log").read_text()[-2000:]
    assert "timer fired; what it sends waits" in (tmp_path / "scheduler.log").read_text()
