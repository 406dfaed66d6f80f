"""The supervisor of `loa up`: how long it waits before each restart, and what it says."""

from __future__ import annotations

import signal
import subprocess
import time

from coordinator.embedded import Service, Supervisor, backoff_s


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    """Restarts in a row wait 1, 2, 4, 8, 16 s, then 30 s however many follow."""
    assert [backoff_s(n) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def sleeper() -> Service:
    """A real process that runs until it is stopped."""
    return Service("sleeper", "", 0, subprocess.Popen(["sleep", "60"]))


def test_a_killed_service_is_started_again_after_its_backoff() -> None:
    """Killed, a service is reported with its exit code and started again 1 s later (a new
    process); a second death soon after waits 2 s; stop_all leaves nothing running."""
    said: list[str] = []
    supervisor = Supervisor(say=said.append)
    first = supervisor.keep(sleeper)
    try:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert supervisor.check() is False
        assert said == ["sleeper exited with -9; restarting in 1 s (restart 1)"]
        time.sleep(1.05)
        assert supervisor.check() is True
        second = supervisor.supervised[0].service
        assert second.proc.pid != first.proc.pid and second.proc.poll() is None
        assert supervisor.pids() == {"sleeper": second.proc.pid}
        second.proc.terminate()
        second.proc.wait()
        assert supervisor.check() is False
        assert said[1:] == ["sleeper is back",
                            "sleeper exited with -15; restarting in 2 s (restart 2)"]
    finally:
        supervisor.stop_all()
    assert supervisor.supervised[0].service.proc.poll() is not None


def test_stop_all_stops_the_named_first_then_the_last_started_first() -> None:
    """`loa up` stops its scheduler and worker before the web (which takes the provider's
    status callbacks of the worker's last messages), then the rest in reverse order."""
    supervisor = Supervisor(say=lambda _: None)
    for name in ("broker", "redis", "worker", "scheduler", "web"):
        supervisor.keep(lambda n=name: Service(n, "", 0, sleeper().proc))
    stopped: list[str] = []
    for item in supervisor.supervised:
        def stop(timeout_s: float = 5.0, service: Service = item.service) -> None:
            stopped.append(service.name)
            service.proc.kill()
            service.proc.wait()
        item.service.stop = stop  # type: ignore[method-assign]
    supervisor.stop_all(first=("scheduler", "worker", "sandbox-not-started"))
    assert stopped == ["scheduler", "worker", "web", "redis", "broker"]
    assert all(i.service.proc.poll() is not None for i in supervisor.supervised)
