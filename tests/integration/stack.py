"""A private Loa stack for tests: a real Tansu broker, a real redis-server, real
worker and web processes started the way an operator starts them (`loa worker`, `loa web`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import redis

from coordinator.broker import ensure_topics
from coordinator.embedded import Service, free_port, start_redis, start_tansu, wait_for_port
from coordinator.keys import Keys
from coordinator.settings import Settings

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "condition",
             interval_s: float = 0.1) -> T:
    """Poll until `probe` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Stack:
    """Broker + Redis + worker(s) + web, all on free loopback ports, under one folder."""

    def __init__(self, root: Path, prefix: str = "loatest", sms: bool = False,
                 redis_password: str | None = None, durable_redis: bool = False,
                 **env: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.broker_port = free_port()
        self.broker: Service = start_tansu(self.broker_port, log_path=root / "broker.log")
        # With a password, redis-server requires it and every URL below carries it.
        # Append-only (as `loa up` runs it) only for tests that restart Redis: it costs time.
        self.durable_redis = durable_redis
        self.redis_service: Service = start_redis(root / "redis", appendonly=durable_redis,
                                                  password=redis_password)
        self.keys = Keys(prefix)
        self.web_port = free_port()  # known up front: the worker puts it in callback URLs
        self.env = {
            **os.environ,
            "LOA_KAFKA_URL": self.broker.url,
            "LOA_REDIS_URL": self.redis_service.url,
            "LOA_REDIS_PREFIX": prefix,
            "LOA_DATA_DIR": str(root),
            "LOA_OUTBOX_RESEND_AFTER_S": "1",
            # What the broker lost is sent again sooner than in production, so that tests of
            # restarts do not wait the production delays (30 s, 15 s).
            "LOA_RESEND_KEPT_AFTER_S": "5",
            "LOA_RECOVER_STALLED_AFTER_S": "4",
            "LOA_LOG_FORMAT": "json",
            "LOA_WEB_PORT": str(self.web_port),
            "LOA_SECRET_KEY": "test-secret-key-0123456789",
            # An idle stack asks the broker for records every fetch wait: at 10 ms (the
            # default) each idle worker and its Tansu burn a third of a core, and several
            # stacks are up at once in a run. 50 ms costs a test a few tenths of a second.
            "LOA_BROKER_FETCH_WAIT_MS": "50",
            # Surges are raised only where a test asks (tests/integration/test_surges.py):
            # on a shared stack, other tests' reports would add up to one.
            "LOA_SURGE_THRESHOLD": "1000000",
            **env,
        }
        self.sms_sandbox: subprocess.Popen[bytes] | None = None
        sandbox_port = self._start_sms_sandbox() if sms else None
        self.redis = redis.Redis.from_url(self.redis_service.url, decode_responses=True)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.scheduler: subprocess.Popen[bytes] | None = None
        self._tokens: dict[str, str] = {}
        self.web: subprocess.Popen[bytes] | None = None
        self.web_url = ""
        self.totp_secrets: dict[str, str] = {}  # username -> what `loa accounts add` printed
        self.ensure_topics()  # while the SMS sandbox starts
        if sandbox_port is not None:
            wait_for_port(sandbox_port, timeout_s=30, proc=self.sms_sandbox)

    def _start_sms_sandbox(self) -> int:
        """Start the SMS sandbox (not waiting for it); its port."""
        port = free_port()
        self.sms_url = f"http://127.0.0.1:{port}"
        self.env |= {"LOA_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
                     "LOA_TWILIO_AUTH_TOKEN": "test-token",
                     "LOA_TWILIO_FROM_NUMBER": "+15005550006",
                     "LOA_TWILIO_BASE_URL": self.sms_url}
        self.sms_sandbox = self._spawn("sms-sandbox", ["sandbox", "sms", "--port", str(port)],
                                       self.env)
        return port

    def sms_sent(self, to: str | None = None, timeout_s: float = 10) -> list[dict[str, Any]]:
        """What the SMS sandbox received (its dev outbox)."""
        params = {"to": to} if to else {}
        found: list[dict[str, Any]] = httpx.get(f"{self.sms_url}/_sandbox/messages",
                                                params=params, timeout=timeout_s).json()
        return found

    def sms_count(self) -> int:
        """How many messages the SMS sandbox accepted (cheap, unlike the whole outbox)."""
        count: int = httpx.get(f"{self.sms_url}/_sandbox/count", timeout=30).json()["messages"]
        return count

    def sms_reply(self, sender: str, body: str) -> dict[str, Any]:
        """Have the SMS sandbox deliver an inbound SMS to our webhook, signed like Twilio."""
        answer: dict[str, Any] = httpx.post(f"{self.sms_url}/_sandbox/inbound", json={
            "from": sender, "to": "+15005550006", "body": body,
            "url": f"{self.web_url}/hooks/twilio/sms"}, timeout=30).json()
        return answer

    def settings(self) -> Settings:
        """Settings as the processes of this stack see them."""
        return Settings(kafka_url=self.broker.url, redis_url=self.redis_service.url,
                        redis_prefix=self.keys.prefix)

    def ensure_topics(self) -> None:
        """Create the topics (a fresh Tansu has none)."""
        asyncio.run(ensure_topics(self.settings()))

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, worker_id: str = "w1", keep_heartbeat: bool = False,
                     **env: str) -> None:
        """Start `loa worker` and wait until its heartbeat shows it alive (a heartbeat a
        worker of that id left is cleared first, unless `keep_heartbeat`)."""
        self.start_workers(worker_id, keep_heartbeat=keep_heartbeat, **env)

    def start_workers(self, *worker_ids: str, keep_heartbeat: bool = False, **env: str
                      ) -> None:
        """:meth:`start_worker` for each of `worker_ids`, started side by side (each
        worker's start-up is seconds of Python imports on a slow machine)."""
        heartbeats = {}
        for worker_id in worker_ids:
            heartbeat = self.keys.worker_heartbeat(worker_id)
            if not keep_heartbeat:
                self.redis.delete(heartbeat)
            heartbeats[worker_id] = (heartbeat, self.redis.get(heartbeat))
            self.workers[worker_id] = self._spawn(
                f"worker-{worker_id}", ["worker"],
                {**self.env, "LOA_WORKER_ID": worker_id, **env})
        for worker_id, (heartbeat, left) in heartbeats.items():
            proc = self.workers[worker_id]
            wait_for(lambda proc=proc, heartbeat=heartbeat, left=left: proc.poll() is not None
                     or self.redis.get(heartbeat) not in (None, left),
                     60, f"worker {worker_id} to start")
            assert proc.poll() is None, \
                (self.root / f"worker-{worker_id}.log").read_text()[-3000:]

    def stop_worker(self, worker_id: str = "w1", sig: int = signal.SIGTERM) -> None:
        """Stop a worker (SIGTERM: clean; SIGKILL: a crash) and wait for it to be gone."""
        proc = self.workers.pop(worker_id)
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_scheduler(self) -> None:
        """Start `loa scheduler` and wait until its heartbeat shows it alive."""
        self.redis.delete(self.keys.scheduler_heartbeat())
        proc = self.scheduler = self._spawn("scheduler", ["scheduler"], self.env)
        wait_for(lambda: proc.poll() is not None or self.redis.exists(
            self.keys.scheduler_heartbeat()), 60, "the scheduler to start")
        assert proc.poll() is None, (self.root / "scheduler.log").read_text()[-3000:]

    def stop_scheduler(self) -> None:
        """Stop `loa scheduler` (SIGTERM) and wait for it to be gone."""
        if self.scheduler is not None:
            self.scheduler.terminate()
            self.scheduler.wait(30)
            self.scheduler = None

    def start_web(self) -> str:
        """Start `loa web` on a free port; returns its base URL."""
        self.web = self._spawn("web", ["web"], self.env)
        return self._web_up()

    def start_worker_and_web(self, worker_id: str = "w1") -> str:
        """:meth:`start_worker` and :meth:`start_web`, started side by side (each start-up
        is seconds of Python imports on a slow machine); returns the web's base URL."""
        self.web = self._spawn("web", ["web"], self.env)
        self.start_worker(worker_id)
        return self._web_up()

    def _web_up(self) -> str:
        assert self.web is not None
        wait_for_port(self.web_port, timeout_s=60, proc=self.web)
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        return self.web_url

    def another_web(self, name: str = "web2", **env: str
                    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start one more `loa web` on a free port of its own, as a second process behind a
        balancer would run (with `env` added); (the process, its base URL). The caller
        stops it."""
        port = free_port()
        proc = self._spawn(name, ["web"], {**self.env, "LOA_WEB_PORT": str(port), **env})
        wait_for_port(port, timeout_s=60, proc=proc)
        return proc, f"http://127.0.0.1:{port}"

    def restart_broker(self) -> None:
        """Kill the broker and start an empty one on the same port (memory storage)."""
        self.broker.stop()
        self.broker = start_tansu(self.broker_port, log_path=self.root / "broker.log")
        self.ensure_topics()

    def restart_redis(self) -> None:
        """Stop Redis (it writes its append-only file on the way down) and start it again
        on the same port from the same folder: what a reboot of the machine does."""
        assert self.durable_redis, "a Redis without its append-only file restarts empty"
        self.redis_service.stop()
        self.redis_service = start_redis(self.root / "redis", self.redis_service.port,
                                         appendonly=True)

    def cli(self, *args: str, timeout_s: float = 60, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run `loa ARGS` against this stack (with `stdin` as its input)."""
        return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout_s, check=False,
                              input=stdin)

    def subscribers(self, *args: str, timeout_s: float = 60
                    ) -> subprocess.CompletedProcess[str]:
        """Run `loa subscribers ARGS` as the local operator (they handle contacts)."""
        return self.cli("subscribers", *args, "--operator-reason", "tests", timeout_s=timeout_s)

    def account(self, username: str, role: str, person: str = "", totp: bool = False) -> str:
        """Make a console account with `loa accounts add`; returns its password and keeps
        the TOTP secret it printed (duty officers, admins; approvers with `totp`) in
        `totp_secrets`."""
        password = f"pw-{username}-0123456789"
        done = self.cli("accounts", "add", username, "--role", role,
                        *(["--person", person] if person else []), "--password-stdin",
                        *(["--totp"] if totp else []), stdin=password + "\n")
        assert done.returncode == 0, done.stderr
        self.totp_secrets.pop(username, None)
        for line in done.stdout.splitlines():
            if line.startswith("totp secret: "):
                self.totp_secrets[username] = line.split()[2]
        return password

    def cli_json(self, *args: str) -> Any:
        """Run `loa ARGS --json` and decode what it printed."""
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def http(self, token: str | None = None) -> httpx.Client:
        """A client for the web process: a duty officer's API token unless another `token`
        is given ('' for an anonymous client)."""
        token = self.token("duty-officer", "duty_officer") if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.web_url, timeout=30, headers=headers)

    def api_get(self, path: str) -> Any:
        """GET an API path with a duty officer's token; the decoded JSON."""
        with self.http() as http:
            return http.get(path).json()

    def anonymous(self) -> httpx.Client:
        """A client with no credential, as a stranger on the internet."""
        return self.http(token="")

    def token(self, name: str, role: str, **scope: str) -> str:
        """An API token made with `loa tokens add` (made once per name, then reused);
        `scope` is department=, area= or person=."""
        if name not in self._tokens:
            options = [f"--{k}={v}" for k, v in scope.items()]
            done = self.cli("tokens", "add", name, "--role", role, *options)
            assert done.returncode == 0, done.stderr
            self._tokens[name] = done.stdout.strip().splitlines()[-1]
        return self._tokens[name]

    def as_officer(self) -> list[str]:
        """CLI options to act, or read, with a duty officer's token (made on first use)."""
        return ["--token", self.token("duty-officer", "duty_officer")]

    def as_person(self, person_id: str) -> list[str]:
        """CLI options to act with an approver token of `person_id` (made on first use)."""
        return ["--token", self.token(f"person-{person_id}", "approver", person=person_id)]

    # state, read straight from Redis
    def incident_of(self, report_id: str) -> str | None:
        """The incident a report was taken into, once it was."""
        return cast(str | None, self.redis.hget(self.keys.report(report_id), "incident"))

    def incident(self, incident_id: str) -> dict[str, str]:
        """The incident's stored state."""
        return cast(dict[str, str], self.redis.hgetall(self.keys.incident(incident_id)))

    def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        """An incident's timeline entries, in order."""
        return [json.loads(e) for e in self.redis.lrange(self.keys.timeline(incident_id), 0, -1)]

    def timeline_actions(self, incident_id: str, messages: bool = False) -> list[str]:
        """The actions of an incident's timeline, in order; the prompts and deliveries it
        led to are left out unless `messages`."""
        actions = [json.loads(e)["action"]
                   for e in self.redis.lrange(self.keys.timeline(incident_id), 0, -1)]
        return [a for a in actions
                if messages or not a.startswith(("prompt.", "delivery."))]

    def wait_for_status(self, incident_id: str, status: str, timeout_s: float = 30) -> None:
        """Wait until the incident reaches `status`."""
        wait_for(lambda: self.incident(incident_id).get("status") == status, timeout_s,
                 f"{incident_id} to be {status} (is {self.incident(incident_id).get('status')})")

    def close(self) -> None:
        """Stop every process and close every file."""
        for worker_id in list(self.workers):
            self.stop_worker(worker_id)
        self.stop_scheduler()
        if self.web is not None:
            self.web.terminate()
            self.web.wait(10)
        if self.sms_sandbox is not None:
            self.sms_sandbox.terminate()
            self.sms_sandbox.wait(10)
        self.redis.close()
        self.broker.stop()
        self.redis_service.stop()


@contextmanager
def running(root: Path, sms: bool = False, **env: str) -> Iterator[Stack]:
    """A stack with one worker and the web started; closed on exit."""
    stack = Stack(root, sms=sms, **env)
    try:
        stack.start_worker_and_web()
        yield stack
    finally:
        stack.close()
