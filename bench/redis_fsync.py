"""Benchmark: what `appendfsync always` costs the embedded Redis against `everysec`.

    flock /tmp/loa-heavy.lock .venv/bin/python bench/redis_fsync.py --ops 5000

`loa up` starts its Redis with `appendonly yes` and `appendfsync always`, so a report
acknowledged with 202 is on disk (with `everysec`, a power cut may lose the last second of
acknowledged reports). This starts a private redis-server both ways, with its data folder
under /tmp (on this machine's disk unless /tmp is a tmpfs: the output says which file system
it measured on), and times N small MULTI/EXEC transactions like filing a report (an HSET
of ~400 bytes and an XADD) with redis-py asyncio, one after the other (`--concurrency 1`,
the default) or with several clients at once. The two modes are run in turn `--rounds`
times. Prints JSON: per mode, transactions per second and p50/p99/max latency of each
round, and the median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

from coordinator.embedded import start_redis

Fsync = Literal["always", "everysec"]
PAYLOAD = json.dumps({"kind": "flood", "severity": "severe", "area": "hn-phuong-giang-vo",
                      "title": "Ngập sâu trên phố Kim Mã", "details": "Nước ngập 40 cm " * 12,
                      "source": "api", "reporter": "desk"})


async def one_transaction(redis: Redis, i: int) -> float:
    """File one report-like record (HSET + XADD in one MULTI/EXEC); its latency in s."""
    started = time.perf_counter()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset("bench:outbox", f"RPT-{i:07d}", PAYLOAD)
        pipe.xadd("bench:audit", {"action": "report.filed", "report": f"RPT-{i:07d}"})
        await pipe.execute()
    return time.perf_counter() - started


async def timed(url: str, ops: int, concurrency: int) -> dict[str, float]:
    """Run `ops` transactions on `concurrency` connections at once (after a short warm-up);
    transactions per second and latency percentiles."""
    redis = Redis.from_url(url, max_connections=concurrency)
    try:
        for i in range(100):
            await one_transaction(redis, -1 - i)
        latencies: list[float] = []

        async def client(first: int) -> None:
            for i in range(first, ops, concurrency):
                latencies.append(await one_transaction(redis, i))

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await redis.aclose()
    cuts = statistics.quantiles(latencies, n=100)
    return {"per_second": round(ops / elapsed, 1), "p50_ms": round(cuts[49] * 1000, 3),
            "p99_ms": round(cuts[98] * 1000, 3), "max_ms": round(max(latencies) * 1000, 3)}


def one_round(fsync: Fsync, ops: int, concurrency: int) -> dict[str, float]:
    """A fresh redis-server (appendonly yes, `fsync`) in a fresh folder under /tmp, timed."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"loa-fsync-{fsync}-", dir="/tmp"))
    redis = start_redis(data_dir, appendfsync=fsync)
    try:
        return asyncio.run(timed(redis.url, ops, concurrency))
    finally:
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def file_system(path: str) -> str:
    """The type of the file system `path` is on (ext4, tmpfs, …)."""
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", path],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each measure's median across the rounds."""
    return {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]}


def main() -> None:
    """Measure both modes in turn and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="transactions per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode")
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once")
    args = parser.parse_args()
    modes: tuple[Fsync, ...] = ("everysec", "always")
    rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rounds[mode].append(one_round(mode, args.ops, args.concurrency))
    print(json.dumps({
        "ops": args.ops, "concurrency": args.concurrency, "file_system": file_system("/tmp"),
        "appendfsync": {mode: {"median": median_of(rounds[mode]), "rounds": rounds[mode]}
                        for mode in modes}}, indent=2))


if __name__ == "__main__":
    main()
