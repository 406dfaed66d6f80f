"""Many live public pages at once, in their own process, for bench/public_pages.py.

Opens `--pages` server-sent-event streams on `GET /events` (spread over the given web
URLs), writes `--ready` once every stream is open, and records, for each page, when (wall
clock, `time.time()`) it first heard each `statement` event. Once `--statement-file`
appears (the statement to look for), it stops when every page heard that one, or
`--seconds` later. Prints one JSON object: per
page the time it heard it (null: never), the pages that failed to connect, and this
process's CPU time.

    python bench/_sse_client.py --url URL --pages 1000 --ready F --statement-file G
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import time
from pathlib import Path

import aiohttp

ID = re.compile(r'"id": "([^"]+)"')


async def page(session: aiohttp.ClientSession, url: str, heard: dict[str, float],
               opened: list[int], n: int) -> None:
    """One live page: when it first heard each statement's event."""
    try:
        async with session.get(f"{url}/events") as stream:
            opened.append(n)
            kind = ""
            async for raw in stream.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "statement":
                    found = ID.search(line)
                    if found:
                        heard.setdefault(found.group(1), time.time())
    except (aiohttp.ClientError, TimeoutError):
        return


async def run(urls: list[str], pages: int, ready: Path, statement_file: Path,
              seconds: float) -> dict[str, object]:
    heard: list[dict[str, float]] = [{} for _ in range(pages)]
    opened: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(page(session, urls[n % len(urls)], heard[n], opened, n))
                 for n in range(pages)]
        deadline = time.monotonic() + 120
        while len(opened) < pages and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        ready.write_text(str(len(opened)))
        while not statement_file.exists():
            await asyncio.sleep(0.05)
        wanted = statement_file.read_text().strip()
        until = time.monotonic() + seconds
        while time.monotonic() < until and not all(wanted in h for h in heard):
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"heard": [h.get(wanted) for h in heard], "opened": len(opened)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--statement-file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    out = asyncio.run(run(args.url, args.pages, args.ready, args.statement_file,
                          args.seconds))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({**out, "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}))


if __name__ == "__main__":
    main()
