"""`loa up` supervises what it started: a killed worker is started again (and the run file
names the new one); only Ctrl-C stops everything, and then nothing it started is left."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from coordinator.embedded import free_port
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration


class Up:
    """A `loa up` process on its embedded defaults in its own data folder; its console
    output goes to `up.log` there."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.web_port = free_port()
        self.log = data_dir / "up.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
        env |= {"LOA_DATA_DIR": str(data_dir), "LOA_WEB_PORT": str(self.web_port)}
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "up"],
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        """What `loa up` printed so far."""
        return self.log.read_text(errors="replace")

    def run_file(self) -> dict[str, Any] | None:
        """The run file as it is now (None while it is missing or half written)."""
        try:
            found: dict[str, Any] = json.loads((self.data_dir / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return found

    def healthy(self) -> bool:
        """Whether the web answers /healthz with 200 (Redis and the broker answer)."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.web_port}/healthz",
                             timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Stop it if a test left it running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """A running `loa up` whose web answers /healthz."""
    started = Up(tmp_path / "data")
    try:
        wait_for(lambda: started.proc.poll() is not None or started.healthy(), 90,
                 "loa up's web to answer /healthz", interval_s=0.3)
        assert started.proc.poll() is None, started.output()[-3000:]
        yield started
    finally:
        started.close()


def alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    """The arguments a process was started with ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")
    except OSError:
        return []


def parent_of(pid: int) -> int:
    """The parent process id of a process (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def thread_policies(pid: int) -> set[int]:
    """The scheduling policy of each thread of a process (field 41 of
    /proc/PID/task/TID/stat: 0 SCHED_OTHER, 3 SCHED_BATCH); a thread that ends meanwhile is
    left out."""
    policies = set()
    for thread_stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            policies.add(int(thread_stat.read_text().rsplit(")", 1)[1].split()[38]))
        except OSError:
            continue
    return policies


def test_a_killed_worker_is_started_again_and_ctrl_c_stops_all(up: Up) -> None:
    """SIGKILL the worker: `loa up` says it exited with -9 and restarts it after 1 s, a new
    `coordinator.cli worker` child runs and the run file names it; SIGINT then stops
    `loa up` with 0, removes the run file and leaves none of its processes."""
    first = wait_for(up.run_file, 10, "the run file")
    assert sorted(first["pids"]) == ["broker", "redis", "scheduler", "sms-sandbox",
                                     "smtp-sandbox", "web", "worker"]
    assert command_line(first["pids"]["scheduler"])[-2:] == ["coordinator.cli", "scheduler"]
    old_worker = first["pids"]["worker"]
    assert command_line(old_worker)[-2:] == ["coordinator.cli", "worker"]

    os.kill(old_worker, signal.SIGKILL)
    again = wait_for(lambda: (r := up.run_file()) and r["pids"]["worker"] != old_worker and r,
                     30, "the run file to name a new worker")
    new_worker = again["pids"]["worker"]
    assert alive(new_worker)
    assert command_line(new_worker)[-2:] == ["coordinator.cli", "worker"]
    assert parent_of(new_worker) == up.proc.pid
    assert {k: v for k, v in again["pids"].items() if k != "worker"} == {
        k: v for k, v in first["pids"].items() if k != "worker"}
    printed = up.output()
    assert "worker exited with -9; restarting in 1 s (restart 1)\n" in printed
    assert "worker is back\n" in printed
    assert "stopping everything" not in printed
    assert up.healthy()
    # The worker, every thread of it, is scheduled as batch work (LOA_WORKER_CPU_POLICY);
    # the web and the scheduler, a report's acceptance and the deadlines, as `loa up` was
    # (as this test runs). Three threads at least: its own, faust's consumer thread and
    # the metrics server's; at its start, before it asks, its threads are as usual.
    usual = os.sched_getscheduler(0)
    if usual != os.SCHED_BATCH:  # (a test run started as batch work would prove nothing)
        wait_for(lambda: len(list(Path(f"/proc/{new_worker}/task").glob("*"))) >= 3
                 and thread_policies(new_worker) == {os.SCHED_BATCH}, 30,
                 "every thread of the worker scheduled as batch work")
    assert thread_policies(again["pids"]["web"]) == {usual}
    assert thread_policies(again["pids"]["scheduler"]) == {usual}
    # (Its start is over before the stop below, so nothing it says comes after "stopping".)
    wait_for(lambda: "timers rebuilt from Redis" in up.output().split("worker is back")[-1],
             30, "the new worker to be started")
    # Its processes reach Redis over its Unix socket (the owner's only); the run file's URL,
    # TCP, is for people and the CLI: this connection is the only one over TCP.
    socket = up.data_dir / "redis" / "redis.sock"
    assert stat.S_ISSOCK(socket.stat().st_mode) and stat.S_IMODE(socket.stat().st_mode) == 0o700
    with redis.Redis.from_url(first["redis_url"], decode_responses=True) as r:
        def by_socket() -> list[dict[str, Any]] | None:
            clients: list[dict[str, Any]] = r.client_list()
            over = [c for c in clients if "U" in c["flags"]]  # (`addr` is cut short)
            return over if len(over) >= 3 and len(clients) - len(over) == 1 else None

        wait_for(by_socket, 15, "the worker, the scheduler and the web on the socket alone")

    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(30) == 0
    assert up.output().endswith("stopping…\nstopped\n")
    assert up.run_file() is None
    left = [name for name, pid in again["pids"].items() if alive(pid)]
    assert left == []
    assert not alive(old_worker)
