"""Benchmark: what sealing and verifying the audit trail cost, on a private redis-server.

    .venv/bin/python bench/audit_chain.py --incidents 2000 --deliveries 100000

Writes an audit trail the shape Loa writes it (each incident 6 entries with its timeline,
a statement's delivery outcomes in between, as MULTI transactions of 500), then seals it
with the worker's sealer and verifies it with `loa audit verify`'s code. Prints JSON:
entries, links, seal and verify rate (entries/s) and their CPU time per entry (this
process and redis-server), and the memory the chain adds per link and per entry (Redis
MEMORY USAGE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.audit.sealer import BATCH, seal
from coordinator.audit.verify import verify
from coordinator.embedded import start_redis
from coordinator.events import AuditEvent
from coordinator.keys import Keys
from coordinator.state import Redis, connect, queue_audit

STEPS = ["incident.opened", "playbook.selected", "draft.rendered", "approval.requested",
         "approval.approved", "statement.published"]


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def write_trail(redis: Redis, keys: Keys, incidents: int, deliveries: int) -> int:
    """The trail; how many entries."""
    at = datetime.now(UTC)
    events = [AuditEvent(at=at, actor="duty-1", action=step, interface="api",
                         incident_id=f"INC-{n:06d}", subject=f"INC-{n:06d}")
              for n in range(incidents) for step in STEPS]
    per_gap = deliveries // max(1, incidents)
    written = 0
    for n in range(0, len(events), 6):
        batch = events[n:n + 6] + [
            AuditEvent(at=at, actor="loa", action="delivery.sent", interface="sms",
                       subject=f"DLV-{n}-{i}", detail={"to": f"sub-{i:016x}",
                                                       "purpose": "statement"})
            for i in range(per_gap)]
        for start in range(0, len(batch), 500):
            async with redis.pipeline(transaction=True) as pipe:
                for event in batch[start:start + 500]:
                    queue_audit(pipe, keys, event)
                await pipe.execute()
        written += len(batch)
    return written


async def run(incidents: int, deliveries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        service = start_redis(Path(tmp), appendonly=False)
        redis, keys, key = connect(service.url), Keys("bench"), b"bench-key"
        try:
            entries = await write_trail(redis, keys, incidents, deliveries)
            before = await redis.info("memory")
            cpu0, rcpu0, t0 = time.process_time(), cpu_of(service.proc.pid), time.monotonic()
            sealed = 0
            while (n := await seal(redis, keys, key, datetime.now(UTC), 60)) > 0:
                sealed += n
                if n < BATCH:
                    break
            seal_s = time.monotonic() - t0
            seal_cpu, seal_rcpu = time.process_time() - cpu0, cpu_of(service.proc.pid) - rcpu0
            after = await redis.info("memory")
            links = await redis.xlen(keys.audit_links())
            cpu0, rcpu0, t0 = time.process_time(), cpu_of(service.proc.pid), time.monotonic()
            result = await verify(redis, keys, [key])
            verify_s = time.monotonic() - t0
            verify_cpu = time.process_time() - cpu0
            verify_rcpu = cpu_of(service.proc.pid) - rcpu0
        finally:
            await redis.aclose()
            service.stop()
    added = after["used_memory"] - before["used_memory"]
    return {
        "entries": entries, "sealed": sealed, "links": links, "verified": result.ok,
        "seal": {"seconds": round(seal_s, 2), "entries_per_s": round(sealed / seal_s),
                 "cpu_us_per_entry": {"sealer": round(seal_cpu / sealed * 1e6, 1),
                                      "redis": round(seal_rcpu / sealed * 1e6, 1)}},
        "verify": {"seconds": round(verify_s, 2), "entries_per_s": round(entries / verify_s),
                   "cpu_us_per_entry": {"verifier": round(verify_cpu / entries * 1e6, 1),
                                        "redis": round(verify_rcpu / entries * 1e6, 1)}},
        "memory_added": {"bytes": added, "per_link": round(added / links),
                         "per_entry": round(added / entries)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=2000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.incidents, args.deliveries)), indent=2))


if __name__ == "__main__":
    main()
