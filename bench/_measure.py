"""What the benchmarks measure the same way."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

SyncRedis = Any
"""redis-py's synchronous client answering str: its stubs ignore `decode_responses=True`
and type every reply `bytes | str` (as `coordinator.state.Redis` says of the asyncio
one), so the benchmarks type it loosely at this one place."""


def sync_redis(url: str) -> SyncRedis:
    """A synchronous Redis client that answers str, for a benchmark's own reads."""
    return redis.Redis.from_url(url, decode_responses=True)


def reference_work_ms(rounds: int = 5) -> float:
    """The CPU time (ms, median of `rounds`) this machine takes now for a fixed piece of
    Python much like a handler's (JSON, strings, dicts): higher is slower. The same code
    costs this machine up to twice as much at one time as at another, even within an hour;
    figures of two runs compare in proportion to this. The benchmarks print it before their
    run and after it (`reference_work_ms`), to show how the machine moved meanwhile."""
    doc: dict[str, Any] = {"id": "INC-00001", "kind": "flood", "area": "hn-ba-dinh",
                           "title": "Ngập sâu phố Kim Mã", "n": 0}
    took = []
    for _ in range(rounds):
        started = time.process_time()
        for n in range(20_000):
            doc["n"] = n
            json.loads(json.dumps(doc))
            f"{doc['kind']}:{doc['area']}:{n}".split(":")
        took.append((time.process_time() - started) * 1000)
    return round(statistics.median(took), 1)


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes a benchmark started, then kill what has not gone in 30 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_beats(r: SyncRedis, beats: dict[str, subprocess.Popen[bytes]],
                   timeout_s: float = 60.0) -> None:
    """Until each heartbeat key is there; SystemExit naming the first whose process exited
    before, or that did not come within `timeout_s` (a benchmark must not hang on it)."""
    deadline = time.monotonic() + timeout_s
    for key, proc in beats.items():
        while not r.exists(key):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{key} never appeared (its process: exit code {proc.poll()});"
                                 " see its log")
            time.sleep(0.1)


def own_cpu_s() -> float:
    """This process's CPU time (user + system), to the microsecond (:func:`cpu_s` reads
    another process's from /proc, in ticks of 10 ms: too coarse for a round)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def instructions_a_round(script: str, per_round: int, what: str) -> dict[str, Any]:
    """Instructions of one `what` (a report, a request), user space only, counted by
    valgrind's callgrind: `script` is run twice at once with ``--child 1`` and ``--child 3``
    (and ``--reports per_round``), i.e. one and three measured rounds after the same
    start-up and warm-up; the difference is two rounds' cost. It moves by well under 1 %
    from run to run, whatever else the machine does. The kernel's part of a round trip,
    and the servers' CPU, are not in it."""
    with tempfile.TemporaryDirectory(prefix="loa-bench-cg-") as folder:
        runs = {}
        for rounds in (1, 3):
            out = Path(folder) / f"callgrind.{rounds}"
            runs[rounds] = (out, subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 sys.executable, script, "--child", str(rounds), "--reports", str(per_round)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        totals = {}
        for rounds, (out, proc) in runs.items():
            if proc.wait() != 0:
                raise SystemExit(f"the run of {rounds} rounds under valgrind failed")
            summary = next(line for line in out.read_text().splitlines()
                           if line.startswith("summary:"))
            totals[rounds] = int(summary.split()[1])
    return {f"instructions_per_{what}": round((totals[3] - totals[1]) / (2 * per_round)),
            "instructions_total": totals}


def rounds_main(benchmark: str, script: str, what: str, default_per_round: int,
                measure: Callable[[int, int], dict[str, Any]]) -> None:
    """The command line of a benchmark counted in rounds of `what` (a report, a request),
    with callgrind's count on request (`--instructions`, :func:`instructions_a_round`):
    `measure(rounds, per_round)` runs them; its figures, and the machine's
    `reference_work_ms` before and after, are printed as one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reports", type=int, default=default_per_round,
                        help=f"{what}s a round")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions under valgrind (a few minutes)")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one run under valgrind: its count is the figure, not its output
        measure(args.child, args.reports)
        return
    reference = reference_work_ms()
    result: dict[str, Any] = {"benchmark": benchmark, f"{what}s_a_round": args.reports,
                              "rounds": args.rounds, **measure(args.rounds, args.reports)}
    if args.instructions:
        result |= instructions_a_round(script, args.reports, what)
    result["reference_work_ms"] = [reference, reference_work_ms()]  # before, after
    print(json.dumps(result, indent=2))
