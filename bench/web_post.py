"""Benchmark: what `POST /api/reports` costs the web's own process, counted so that two
versions of the code compare on a machine whose speed moves.

The web app (`create_web_app`, its middlewares, routes and lifespan) runs in this process,
driven through httpx's ASGI transport (no socket, no HTTP server: uvicorn's parsing is not
in it) against a private redis-server syncing every write (as `loa up` runs it), with a
reporter's API token, 16 requests at once. No broker answers: each accepted report is left
to the outbox's resend (as when the broker is down), so the broker's send is not in it
either; what is left is the route, its lock (the token's lookup), its validation, the
report's transaction and the answer. Rounds of `--reports` requests each, after a first
round that warms the caches. Prints one JSON object:

- `cpu_us_per_request`: each round's CPU time (user and system) of this process a request,
  and their median. The httpx client's own work is in it, the same for any version of the
  web.
- with `--instructions`: `instructions_per_request`, counted by valgrind's callgrind (two
  runs at once, of one and of three measured rounds): the measure for a change of a few per
  cent (see `bench/report_path.py`).

    .venv/bin/python bench/web_post.py
    .venv/bin/python bench/web_post.py --instructions
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
from _measure import own_cpu_s, rounds_main  # bench/ is the script's folder
from pydantic import SecretStr

from coordinator.city import load_city
from coordinator.embedded import start_redis
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.tokens import issue_token, new_token_record
from coordinator.web.app import create_web_app

AT_ONCE = 16  # requests in flight
AREA = "hn-ba-dinh"  # the reporter's area, and every report's


def nobody_listening() -> str:
    """A broker URL on a port that refuses connections (taken, then given up)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"kafka://127.0.0.1:{port}"


async def run_rounds(redis_url: str, rounds: int, per_round: int) -> dict[str, Any]:
    """The warm-up round, then `rounds` measured ones."""
    settings = Settings(_env_file=None, redis_url=redis_url,  # type: ignore[call-arg]
                        kafka_url=nobody_listening(), secret_key=SecretStr("bench-secret"),
                        log_level="error")
    city = load_city(settings.config_dir, settings.area_map)
    redis = connect(redis_url)
    token = await issue_token(redis, Keys(settings.redis_prefix), new_token_record(
        "bench-desk", "reporter", city, area=AREA))
    await redis.aclose()
    app = create_web_app(settings)
    cpu_us: list[int] = []
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://loa.test",
            headers={"Authorization": f"Bearer {token}"}) as client:
        slots = asyncio.Semaphore(AT_ONCE)

        async def post(n: int) -> None:
            async with slots:
                answer = await client.post("/api/reports", json={
                    "id": f"bench-{n:08d}", "kind": "flood", "severity": "severe",
                    "area": AREA, "title": f"Ngập sâu phố Kim Mã {n}",
                    "details": "Nước ngập 40 cm, xe máy chết máy"})
                if answer.status_code != 202:
                    raise SystemExit(f"POST /api/reports answered {answer.status_code}: "
                                     f"{answer.text}")

        for number in range(rounds + 1):
            started = own_cpu_s()
            await asyncio.gather(*(post(number * per_round + n) for n in range(per_round)))
            if number:  # not the warm-up round
                cpu_us.append(round((own_cpu_s() - started) / per_round * 1e6))
    return {"cpu_us_per_request": {"rounds": cpu_us, "median": statistics.median(cpu_us)}}


def measure(rounds: int, per_round: int) -> dict[str, Any]:
    """The rounds in this process, against a private Redis of their own."""
    from coordinator import observability as obs

    # Not the broker's absence, said at the start and by aiokafka at each try.
    obs.configure_logging("critical", "console")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="loa-bench-web-") as folder:
        service = start_redis(Path(folder) / "redis", appendfsync="always")
        try:
            return asyncio.run(run_rounds(service.nearest_url, rounds, per_round))
        finally:
            service.stop()


def main() -> None:
    rounds_main("web_post", __file__, "request", 500, measure)


if __name__ == "__main__":
    main()
