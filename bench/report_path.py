"""Benchmark: what a report costs the worker's own process on its path, counted so that two
versions of the code compare on a machine whose speed moves.

The worker's handlers run in this process, as the worker runs them, against a private
redis-server syncing every write (as `loa up` runs it), without the broker: each report
taken in (16 at once, as the `reports` agent takes them), its incident planned and its
approvers prompted (their SMS and emails handed over). Rounds of `--reports` new
incidents each, after a first round that warms the caches. Prints one JSON object:

- `cpu_us_per_report`: each round's CPU time (user and system) of this process a report,
  and their median. On this machine the same code moves by a fifth from one run to the
  next (`reference_work_ms`), so two versions compare only alternated, several times.
- `redis_commands_per_report`, `redis_round_trips_per_report`: what Redis ran (its own
  count, scripts' commands included), and how many times this process waited for it.
- with `--instructions`: `instructions_per_report`, the instructions this process ran a
  report, user space only, counted by valgrind's callgrind (two runs at once, of one and
  of three measured rounds; the difference is the rounds' cost, start-up apart). They move
  by well under 1 % from run to run, whatever else the machine does: the measure for a
  change of a few per cent. The kernel's part of a round trip, and Redis's CPU, are not in
  it; `cpu_us_per_report` and the round trips are.

    .venv/bin/python bench/report_path.py
    .venv/bin/python bench/report_path.py --instructions
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from _measure import own_cpu_s, rounds_main  # bench/ is the script's folder
from pydantic import SecretStr

from coordinator import topics
from coordinator.city import load_city
from coordinator.dispatch.channels import build_channels
from coordinator.embedded import start_redis
from coordinator.escalation.timers import Timers
from coordinator.events import Report, Severity
from coordinator.keys import Keys
from coordinator.pipeline import Pipeline
from coordinator.playbooks.loader import load_playbooks
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from coordinator.state import connect

KINDS = ["flood", "fire", "power-outage", "outbreak", "collapse", "traffic"]
AT_ONCE = 16  # reports taken in at once (the `reports` agent's events in flight)


class CountedRoundTrips:
    """Counts the times this process writes to Redis and waits for its answer: every
    command and pipeline of every client goes through one connection method."""

    def __init__(self) -> None:
        from redis.asyncio.connection import AbstractConnection

        self.count = 0
        sent = AbstractConnection.send_packed_command

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            self.count += 1
            await sent(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign,assignment]


async def run_rounds(redis_url: str, rounds: int, per_round: int,
                     trips: CountedRoundTrips) -> dict[str, Any]:
    """The warm-up round, then `rounds` measured ones."""
    settings = Settings(_env_file=None, redis_url=redis_url,  # type: ignore[call-arg]
                        correlation_window_s=1e-6,  # every report opens its own incident
                        secret_key=SecretStr("bench-secret-key"), log_level="error")
    city = load_city(settings.config_dir, settings.area_map)
    rt = Runtime(settings=settings, redis=connect(redis_url), keys=Keys(f"b{uuid.uuid4().hex[:6]}"),
                 city=city, playbooks=load_playbooks(settings.playbooks_dir, city))

    async def nowhere(spec: topics.TopicSpec, key: str, value: bytes) -> None:
        """The broker: nothing on this path goes there unless cut off (a surge's alert)."""

    async def no_timer(kind: str, approval_id: str, number: int, fraction: float) -> None:
        """The escalation timers are scheduled, as the worker does; none comes due."""

    timers = Timers(no_timer)
    timers.start()
    pipeline = Pipeline(rt, build_channels(settings, rt.redis, rt.keys), nowhere,
                        timers.schedule)
    areas = sorted(city.areas)
    slots = asyncio.Semaphore(AT_ONCE)
    taken = 0

    async def take_in(value: bytes) -> None:
        async with slots:
            await pipeline.intake(value)

    cpu_us, commands, round_trips = [], 0, 0
    for number in range(rounds + 1):
        reports = [Report(id=f"rep-path-{n:07d}", kind=KINDS[n % len(KINDS)],
                          severity=Severity.severe, area=areas[n % len(areas)],
                          title=f"Bench report {n}", received_via="api").to_bytes()
                   for n in range(taken, taken + per_round)]
        taken += per_round
        commands_before = int((await rt.redis.info("stats"))["total_commands_processed"])
        trips_before, started = trips.count, own_cpu_s()
        await asyncio.gather(*(take_in(value) for value in reports))
        while pipeline.at_once.tasks:  # the plans, prompts and deliveries begun at once
            await asyncio.wait(set(pipeline.at_once.tasks))
        took = own_cpu_s() - started
        if number:  # not the warm-up round
            cpu_us.append(round(took / per_round * 1e6))
            round_trips += trips.count - trips_before
            commands += (int((await rt.redis.info("stats"))["total_commands_processed"])
                         - commands_before - 1)  # less its own INFO
    timers.shutdown()
    await rt.redis.aclose()
    measured = rounds * per_round
    return {"cpu_us_per_report": {"rounds": cpu_us, "median": statistics.median(cpu_us)},
            "redis_commands_per_report": round(commands / measured, 1),
            "redis_round_trips_per_report": round(round_trips / measured, 2)}


def measure(rounds: int, per_round: int) -> dict[str, Any]:
    """The rounds in this process, against a private Redis of their own."""
    from coordinator import observability as obs

    obs.configure_logging("error", "console")  # not each surge's warning
    trips = CountedRoundTrips()
    with tempfile.TemporaryDirectory(prefix="loa-bench-path-") as folder:
        service = start_redis(Path(folder) / "redis", appendfsync="always")
        try:
            return asyncio.run(run_rounds(service.nearest_url, rounds, per_round, trips))
        finally:
            service.stop()


def main() -> None:
    rounds_main("report_path", __file__, "report", 300, measure)


if __name__ == "__main__":
    main()
