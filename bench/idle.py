"""Benchmark: what `loa up` costs while nothing happens.

    .venv/bin/python bench/idle.py
    .venv/bin/python bench/idle.py --idle-fetch-wait-ms 10 50 --rounds 2 --seconds 30

Starts `loa up` on a fresh data folder (its embedded Redis, Tansu, worker, web, scheduler
and sandboxes), waits until the worker has joined the broker, then reads each process's
CPU time from /proc over `--seconds` of quiet. With several `--idle-fetch-wait-ms` values,
the stack is started once per value and round, alternating, with
`LOA_BROKER_IDLE_FETCH_WAIT_MS` set to it. Prints JSON: per run, each process's share of
one core in percent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import cpu_s  # bench/ is the script's folder

from coordinator.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
READY = ("timers rebuilt from Redis", "Loa is up.")
"""The worker's log line once it has joined the broker and taken its partitions, and
`loa up`'s once the web answers."""
FOREIGN = ("LOA_KAFKA_URL", "LOA_REDIS_URL", "LOA_TWILIO_", "LOA_SMTP_", "LOA_EMBEDDED_",
           "LOA_WORKER_METRICS_PORT", "LOA_SCHEDULER_METRICS_PORT", "LOA_WEB_PORT")
"""Settings of the shell that would point the stack elsewhere than its own embedded parts."""


def children(pid: int) -> dict[str, int]:
    """The processes `pid` started, by a short name (from their command lines)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent != pid:
            continue
        line = [w.decode(errors="replace") for w in words if w]
        if "coordinator.cli" in line:  # loa worker / web / scheduler
            name = line[line.index("coordinator.cli") + 1]
        elif line and line[0].endswith("tansu"):
            name = "broker"
        elif line and "redis-server" in line[0]:
            name = "redis"
        elif "-m" in line[:-1]:  # python -m sandbox.sms …
            name = line[line.index("-m") + 1]
        else:
            name = Path(line[0]).name if line else entry.name
        found[name] = int(entry.name)
    return found


def one_run(idle_wait_ms: int | None, settle_s: float, seconds: float) -> dict[str, Any]:
    """Start `loa up` on its own embedded parts, let it settle, measure; stopped with
    Ctrl-C's signal. Its data folder is removed after a good run and kept (and named) after
    a failed one."""
    data = Path(tempfile.mkdtemp(prefix="loa-bench-idle-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env |= {"LOA_DATA_DIR": str(data), "LOA_WEB_PORT": str(free_port()),
            "LOA_LOG_LEVEL": "info"}
    if idle_wait_ms is not None:
        env["LOA_BROKER_IDLE_FETCH_WAIT_MS"] = str(idle_wait_ms)
    log = data / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "up"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              start_new_session=True)
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 180
        while not all(line in log.read_text(errors="replace") for line in READY):
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"`loa up` did not get ready; see {log}")
            time.sleep(0.5)
        time.sleep(settle_s)
        pids = children(up.pid) | {"up": up.pid}
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        time.sleep(seconds)
        try:
            share = {name: round((cpu_s(pid) - before[name]) / seconds * 100, 1)
                     for name, pid in pids.items()}
        except OSError as exc:  # a process exited (and `loa up` restarted it) meanwhile
            raise SystemExit(f"a process of `loa up` exited during the run; see {log}") from exc
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            for pid in [*pids.values(), up.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            up.wait()
    shutil.rmtree(data, ignore_errors=True)
    return {"idle_fetch_wait_ms": idle_wait_ms, "seconds": seconds,
            "percent_of_a_core": dict(sorted(share.items())),
            "total_percent": round(sum(share.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-fetch-wait-ms", type=int, nargs="*", default=[],
                        help="values of LOA_BROKER_IDLE_FETCH_WAIT_MS to compare (none: "
                             "the configured one)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait after the worker is ready")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    waits: list[int | None] = list(args.idle_fetch_wait_ms) or [None]
    runs = [one_run(wait, args.settle, args.seconds)
            for _ in range(args.rounds) for wait in waits]
    print(json.dumps({"benchmark": "idle", "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
