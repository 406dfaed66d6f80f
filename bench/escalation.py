"""Benchmark: 10,000 pending approvals, deadlines spread over 60 s, one worker.

Creates the approval requests the way the planner does (`first_record` from the
shipped flood playbook), overrides each first deadline to a random moment in a
60 s window and stores them in Redis; the worker (a real `loa worker` process)
adopts their timers from Redis within seconds and fires them. Then reads the
audit trail: lateness (deadline -> the escalation's recorded time) p50/p99/max, missed
(no escalation 10 s after the last deadline) and duplicated (two escalations of
one level), and peak RSS of the worker and Redis. Prints one JSON object.

    .venv/bin/python bench/escalation.py --approvals 10000 --spread 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _measure import peak_rss_mib, sync_redis  # bench/ is the script's folder

from coordinator.broker import ensure_topics
from coordinator.embedded import start_redis, start_tansu
from coordinator.events import Severity
from coordinator.migrations import CURRENT
from coordinator.plan.planner import first_record
from coordinator.runtime import build_runtime
from coordinator.settings import Settings


async def schedule_all(settings: Settings, count: int, spread_s: float, lead_s: float
                       ) -> dict[str, datetime]:
    rt = build_runtime(settings)
    playbook = rt.playbooks["flood"]
    rng = random.Random(42)
    start = datetime.now(UTC) + timedelta(seconds=lead_s)
    deadlines: dict[str, datetime] = {}
    await rt.redis.set(rt.keys.layout_version(), CURRENT, nx=True)  # as this Loa writes it
    for batch in range(0, count, 500):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for i in range(batch, min(count, batch + 500)):
                incident_id = f"INC-{90000000 + i}"
                record, _ = first_record(rt, playbook, Severity.severe, incident_id,
                                      f"DRF-{90000000 + i}-1", datetime.now(UTC))
                due = start + timedelta(seconds=rng.uniform(0, spread_s))
                # Deadlines only: the playbook's reminders, reckoned back from a deadline
                # moved this close, would all be due at once.
                chain = [level.model_copy(update={"reminders": []})
                         for level in record.request.chain]
                record = record.evolve(due=due, request=record.request.model_copy(
                    update={"deadline": due, "chain": chain}))
                pipe.hset(rt.keys.approval(record.request.id), mapping=record.to_hash())
                pipe.zadd(rt.keys.approvals_pending(), {record.request.id: due.timestamp()})
                deadlines[record.request.id] = due
            await pipe.execute()
    await rt.redis.aclose()
    return deadlines


def lateness_of(r: Any, prefix: str, deadlines: dict[str, datetime]) -> dict[str, Any]:
    """From the incidents' timelines: lateness (deadline -> the escalation's recorded time,
    taken as its transition starts) p50/p99/max,
    early, missed (no escalation of level 1) and duplicated (two escalations of one level)."""
    lateness, missed, duplicated = [], 0, 0
    for approval_id, due in deadlines.items():
        incident_id = "INC-" + approval_id.split("-")[1]
        escalations = [e for e in (json.loads(x) for x in r.lrange(
            f"{prefix}:incident:{incident_id}:timeline", 0, -1))
            if e["action"] == "approval.escalated" and e["detail"]["from_level"] == 1]
        if not escalations:
            missed += 1
            continue
        duplicated += len(escalations) > 1
        done = datetime.fromisoformat(escalations[0]["at"])
        lateness.append((done - due).total_seconds())
    lateness.sort()
    q = statistics.quantiles(lateness, n=100) if len(lateness) > 1 else [0.0] * 99
    return {"lateness_p50_ms": round(q[49] * 1000, 1),
            "lateness_p99_ms": round(q[98] * 1000, 1),
            "lateness_max_ms": round(lateness[-1] * 1000, 1) if lateness else None,
            "early": sum(x < 0 for x in lateness), "missed": missed, "duplicated": duplicated}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--approvals", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=60.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loa-bench-esc-"))
    broker = start_tansu(log_path=root / "broker.log")
    rservice = start_redis(root / "redis", appendonly=True)
    settings = Settings(kafka_url=broker.url, redis_url=rservice.url, redis_prefix="bench")
    asyncio.run(ensure_topics(settings))
    env = {**os.environ, "LOA_KAFKA_URL": broker.url, "LOA_REDIS_URL": rservice.nearest_url,
           "LOA_REDIS_PREFIX": "bench", "LOA_LOG_LEVEL": "warning",
           "LOA_SECRET_KEY": "bench-secret-key"}
    with open(root / "worker.log", "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    r = sync_redis(rservice.url)
    try:
        while not r.exists("bench:worker:worker-1"):
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode}): see {root}/worker.log")
            time.sleep(0.1)
        t0 = time.perf_counter()
        # The worker adopts the stored requests' timers from Redis (~1.5 ms a request on
        # this machine): the first deadline leaves it the time to.
        deadlines = asyncio.run(schedule_all(settings, args.approvals, args.spread,
                                             lead_s=max(20.0, args.approvals / 250)))
        scheduling_s = time.perf_counter() - t0
        last = max(deadlines.values())
        while datetime.now(UTC) < last + timedelta(seconds=10):
            time.sleep(0.5)
        redis_peak = int(r.info("memory")["used_memory_peak"]) / 2**20
        print(json.dumps({
            "benchmark": "escalation_deadlines",
            "approvals": args.approvals,
            "spread_seconds": args.spread,
            "scheduling_seconds": round(scheduling_s, 2),
            **lateness_of(r, "bench", deadlines),
            "worker_peak_rss_mib": round(peak_rss_mib(worker.pid), 1),
            "redis_peak_mib": round(redis_peak, 1),
            "at": datetime.now().isoformat(timespec="seconds"),
        }, indent=2))
    finally:
        worker.terminate()
        worker.wait(30)
        r.close()
        broker.stop()
        rservice.stop()


if __name__ == "__main__":
    main()
