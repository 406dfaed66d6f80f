"""Benchmark: reports through the whole planning path on the embedded stack.

Files N reports (each its own incident) through the same code as the API
(outbox + broker), with one `loa worker` (or `--workers N` sharing the topics'
partitions) and `loa scheduler` (as `loa up` runs them), and measures how long each took
from acceptance to its approval request, the throughput, the workers' CPU time a report
(its prompts included), the scheduler's, Redis's and the broker's, and the first worker's
peak RSS. Prints one JSON object.

    .venv/bin/python bench/pipeline.py --reports 2000
    .venv/bin/python bench/pipeline.py --reports 2000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _measure import (  # bench/ is the script's folder
    SyncRedis,
    cpu_s,
    peak_rss_mib,
    reference_work_ms,
    stop_all,
    sync_redis,
    wait_for_beats,
)

from coordinator.broker import Producer, ensure_topics
from coordinator.city import load_city
from coordinator.embedded import start_redis, start_tansu
from coordinator.events import ApprovalRequest, Report, Severity
from coordinator.keys import Keys
from coordinator.reports.filing import file_report
from coordinator.settings import Settings
from coordinator.state import connect


async def file_all(settings: Settings, reports: list[Report]) -> float:
    rds = connect(settings.redis_url or "")
    producer = Producer(settings)
    await producer.start()
    started = time.perf_counter()
    sem = asyncio.Semaphore(64)

    async def one(report: Report) -> None:
        async with sem:
            await file_report(rds, Keys(settings.redis_prefix), producer, report)

    await asyncio.gather(*(one(r) for r in reports))
    elapsed = time.perf_counter() - started
    await producer.stop()
    await rds.aclose()
    return elapsed


def settled_cpu_s(pid: int, timeout_s: float = 60.0) -> float:
    """A process's CPU time once it has gone quiet (under 10 % of a core for 0.5 s): the
    last requests' prompts are handled too, and little idle time is counted."""
    deadline, last = time.perf_counter() + timeout_s, cpu_s(pid)
    while time.perf_counter() < deadline:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - last < 0.05:
            return now
        last = now
    return last


def spawn_loa(root: Path, env: dict[str, str], workers: int,
              into: list[subprocess.Popen[bytes]]) -> None:
    """`workers` workers, then a scheduler, as `loa up` runs them (timers, the audit seal),
    each put `into` the list as it starts (so a failure halfway stops those started)."""
    for name, command, extra in [*((f"worker-{n}", "worker", {"LOA_WORKER_ID": f"worker-{n}"})
                                   for n in range(1, workers + 1)),
                                 ("scheduler", "scheduler", {})]:
        with open(root / f"{name}.log", "ab") as log:
            into.append(subprocess.Popen([sys.executable, "-m", "coordinator.cli", command],
                                         env={**env, **extra}, stdout=log,
                                         stderr=subprocess.STDOUT))


def wait_until_up(r: SyncRedis, keys: Keys, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker and the scheduler beat; with several workers, a few seconds more
    for the consumer group's rebalance to settle before the clock starts."""
    workers = len(procs) - 1
    wait_for_beats(r, dict(zip([*(keys.worker_heartbeat(f"worker-{n}")
                                  for n in range(1, workers + 1)),
                                keys.scheduler_heartbeat()], procs, strict=True)))
    if workers > 1:
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers sharing the topics' partitions (LOA_TOPIC_PARTITIONS)")
    parser.add_argument("--redis-fsync", choices=("always", "everysec"), default="always",
                        help="the embedded Redis's appendfsync (`loa up` runs `always`)")
    parser.add_argument("--redis-over", choices=("unix", "tcp"), default="unix",
                        help="how Loa's processes reach Redis (`loa up`: its Unix socket)")
    args = parser.parse_args()
    reference = reference_work_ms()  # before anything else runs
    root = Path(tempfile.mkdtemp(prefix="loa-bench-"))
    broker = start_tansu(log_path=root / "broker.log")
    rservice = start_redis(root / "redis", appendonly=True, appendfsync=args.redis_fsync)
    settings = Settings(kafka_url=broker.url, redis_url=rservice.url, redis_prefix="bench",
                        correlation_window_s=1e-6)  # every report opens its own incident
    asyncio.run(ensure_topics(settings))
    loa_redis = rservice.nearest_url if args.redis_over == "unix" else rservice.url
    env = {**os.environ, "LOA_KAFKA_URL": broker.url, "LOA_REDIS_URL": loa_redis,
           "LOA_REDIS_PREFIX": "bench", "LOA_CORRELATION_WINDOW_S": "0.000001",
           "LOA_LOG_LEVEL": "warning", "LOA_SECRET_KEY": "bench-secret-key"}
    procs: list[subprocess.Popen[bytes]] = []  # the workers, then the scheduler
    r = sync_redis(rservice.url)
    keys = Keys("bench")
    try:
        spawn_loa(root, env, args.workers, procs)
        workers, scheduler = procs[:-1], procs[-1]
        worker = workers[0]
        wait_until_up(r, keys, procs)
        city = load_city(settings.config_dir, settings.area_map)
        areas = sorted(city.areas)
        kinds = ["flood", "fire", "power-outage", "outbreak", "collapse", "traffic"]
        reports = [Report(id=f"rep-bench-{i:07d}", kind=kinds[i % len(kinds)],
                          severity=Severity.severe, area=areas[i % len(areas)],
                          title=f"Bench report {i}", received_via="api")
                   for i in range(args.reports)]
        pids = {"workers": [w.pid for w in workers], "scheduler": [scheduler.pid],
                "redis": [rservice.proc.pid], "broker": [broker.proc.pid]}
        t0 = time.perf_counter()
        cpu0 = {name: sum(cpu_s(pid) for pid in group) for name, group in pids.items()}
        filing_s = asyncio.run(file_all(settings, reports))
        while r.zcard(keys.approvals()) < args.reports:
            if time.perf_counter() - t0 > 600:
                raise SystemExit("gave up after 600 s")
            time.sleep(0.05)
        total_s = time.perf_counter() - t0
        # The workers once they are quiet (the last prompts handed over too), then Redis and
        # the broker at that moment: never quiet while workers poll, they are not waited for.
        cpu = {"workers": sum(settled_cpu_s(pid) for pid in pids["workers"]) - cpu0["workers"]}
        cpu |= {name: sum(cpu_s(pid) for pid in pids[name]) - cpu0[name]
                for name in ("scheduler", "redis", "broker")}
        latencies = []
        for report in reports:
            incident = r.hget(keys.report(report.id), "incident")
            raw = r.hget(keys.approval(f"APR-{incident[4:]}-1"), "request")
            created = ApprovalRequest.model_validate_json(raw).created_at
            latencies.append((created - report.received_at).total_seconds())
        latencies.sort()
        q = statistics.quantiles(latencies, n=100)
        print(json.dumps({
            "benchmark": "report_to_approval_request",
            "reference_work_ms": [reference, reference_work_ms()],  # before, after
            "reports": args.reports,
            "workers": args.workers,
            "redis_fsync": args.redis_fsync,
            "redis_over": "unix" if loa_redis.startswith("unix:") else "tcp",
            "filing_seconds": round(filing_s, 3),
            "filing_per_second": round(args.reports / filing_s, 1),
            "end_to_end_seconds": round(total_s, 3),
            "reports_per_second": round(args.reports / total_s, 1),
            "latency_p50_ms": round(q[49] * 1000, 1),
            "latency_p99_ms": round(q[98] * 1000, 1),
            "latency_max_ms": round(latencies[-1] * 1000, 1),
            # all workers together; then Redis's and the broker's, over the same span
            "worker_cpu_ms_per_report": round(cpu["workers"] / args.reports * 1000, 2),
            "scheduler_cpu_ms_per_report": round(cpu["scheduler"] / args.reports * 1000, 2),
            "redis_cpu_ms_per_report": round(cpu["redis"] / args.reports * 1000, 2),
            "broker_cpu_ms_per_report": round(cpu["broker"] / args.reports * 1000, 2),
            "worker_peak_rss_mib": round(peak_rss_mib(worker.pid), 1),
            "at": datetime.now().isoformat(timespec="seconds"),
        }, indent=2))
    finally:
        stop_all(procs)
        r.close()
        broker.stop()
        rservice.stop()


if __name__ == "__main__":
    main()
