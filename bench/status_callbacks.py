"""Benchmark: provider status callbacks applied to Redis, one at a time against in batches.

    flock /tmp/loa-heavy.lock .venv/bin/python bench/status_callbacks.py --callbacks 20000

A fan-out of N SMS brings about 2N status callbacks (sent, then delivered). This seeds N
deliveries of one statement in a private redis-server (nothing on disk), then applies one
"delivered" callback to each, twice: one after the other, each written as it comes
(`record_statuses` with one update: what an idle web process does), and `--concurrency`
callbacks in flight at once through `StatusCallbacks` (what a busy web process does: those
that arrive while a batch is written go in the next one). Only the Redis side is measured,
not the HTTP requests. Prints JSON: per mode, callbacks per second, batches, Redis commands
per callback (INFO commandstats) and the Python process's CPU per callback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from channels.twilio_webhooks import StatusUpdate
from coordinator.dispatch.status_callbacks import StatusCallbacks, record_statuses
from coordinator.embedded import start_redis
from coordinator.events import utcnow
from coordinator.keys import Keys
from coordinator.state import Redis, connect


async def seed(redis: Redis, keys: Keys, n: int, tag: str) -> list[StatusUpdate]:
    """N handed-over SMS deliveries of one statement; their "delivered" callbacks."""
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(keys.delivery(f"{tag}{i}"), mapping={
            "status": "sent", "statement_id": f"STM-{tag}", "channel": "sms"})
        pipe.set(keys.provider_message(f"SM{tag}{i}"), f"{tag}{i}")
    await pipe.execute()
    return [StatusUpdate(f"SM{tag}{i}", "delivered", "") for i in range(n)]


async def commands(redis: Redis) -> int:
    """Commands Redis has run so far."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def measure(redis: Redis, keys: Keys, n: int, concurrency: int, batched: bool
                  ) -> dict[str, Any]:
    """Apply N callbacks one way; the figures."""
    tag = "b" if batched else "o"
    updates = await seed(redis, keys, n, tag)
    callbacks = StatusCallbacks(redis, keys)
    before, cpu, wall = await commands(redis), time.process_time(), time.perf_counter()
    if batched:
        left = iter(updates)

        async def client() -> None:
            for update in left:
                await callbacks.record(update)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    else:
        for update in updates:
            await record_statuses(redis, keys, [update], utcnow())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ran = await commands(redis) - before - 1  # the INFO itself
    counted = await redis.hget(keys.dispatch(f"STM-{tag}"), "sms:delivered")
    assert counted == str(n), counted
    return {"callbacks_per_s": round(n / wall), "batches": callbacks.batches if batched else n,
            "redis_commands_per_callback": round(ran / n, 2),
            "client_cpu_us_per_callback": round(cpu / n * 1e6)}


async def main(n: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        service = start_redis(Path(folder), appendonly=False)
        redis = connect(service.url)
        try:
            keys = Keys("bench")
            one = await measure(redis, keys, n, concurrency, batched=False)
            many = await measure(redis, keys, n, concurrency, batched=True)
        finally:
            await redis.aclose()
            service.stop()
    return {"callbacks": n, "concurrency": concurrency, "one_at_a_time": one,
            "batched": many,
            "speedup": round(many["callbacks_per_s"] / one["callbacks_per_s"], 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100,
                        help="callbacks in flight at once in the batched run")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.callbacks, args.concurrency)), indent=2))
