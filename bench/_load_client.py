"""An open-loop HTTP load client, run in its own process by bench/latency.py.

Posts report bodies to `POST /api/reports` (or, with `--get PATH`, reads PATH, as a
resident's browser does) at a fixed rate for a fixed time, each request
started on its schedule whether or not the earlier ones have been answered (so a slow server
shows as latency, not as a lower rate). Latency is measured from the request's scheduled
start, so time spent queued in this client counts too. Prints one JSON object: for each
request its scheduled offset, latency in ms, HTTP status and the accepted report's id; and
this process's own CPU time.

    python bench/_load_client.py --url URL --token T --rate 50 --seconds 20 --bodies F.json
    python bench/_load_client.py --url URL --get / --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any

import aiohttp


async def run(url: str, token: str, rate: float, seconds: float,
              bodies: list[dict[str, Any]], get: str = "") -> list[list[Any]]:
    count = int(rate * seconds)
    results: list[list[Any]] = [[0.0, 0.0, 0, ""] for _ in range(count)]
    connector = aiohttp.TCPConnector(limit=512)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(base_url=url, connector=connector, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(i: int, scheduled: float) -> None:
            status, report_id = 0, ""
            try:
                async with (session.get(get) if get else session.post(
                        "/api/reports", json=bodies[i % len(bodies)])) as answer:
                    status = answer.status
                    if status == 202 and not get:
                        report_id = (await answer.json())["id"]
                    else:
                        await answer.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, report_id = -1, type(exc).__name__
            results[i] = [round(scheduled - started, 4),
                          round((time.perf_counter() - scheduled) * 1000, 2), status, report_id]

        started = time.perf_counter() + 0.05
        tasks = []
        for i in range(count):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--bodies", type=Path)
    parser.add_argument("--get", default="", help="read this path instead of posting reports")
    args = parser.parse_args()
    bodies = json.loads(args.bodies.read_text()) if args.bodies else []
    results = asyncio.run(run(args.url, args.token, args.rate, args.seconds, bodies,
                              args.get))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"results": results,
                      "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}))


if __name__ == "__main__":
    main()
