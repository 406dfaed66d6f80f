"""`loa up`: the whole system on one machine, on embedded defaults, until Ctrl-C; a part
that dies is started again (coordinator.embedded.Supervisor)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from functools import partial
from types import FrameType

from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from coordinator.accounts import first_admin
from coordinator.broker import ensure_topics
from coordinator.embedded import (
    Service,
    Supervisor,
    die_with_parent,
    free_port,
    start_redis,
    start_tansu,
    wait_or_stop,
)
from coordinator.errors import BrokerUnavailable, ConfigError
from coordinator.kept_secrets import MADE, kept_secrets, write_private
from coordinator.keys import Keys
from coordinator.migrations.area_map import AreaMapMismatch
from coordinator.migrations.startup import migrate_embedded, move_embedded_map
from coordinator.migrations.version import LayoutError
from coordinator.settings import Settings
from coordinator.state import redacted, run_with_redis

console = Console()


def _spawn(name: str, args: list[str], env: dict[str, str], port: int | None,
           module: str = "coordinator.cli") -> Service:
    """Start `python -m module args` (a part of Loa, or a stand-in of ``sandbox``), stopped
    with this process; wait for its port when it has one."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                            start_new_session=True, preexec_fn=die_with_parent)
    if port is not None:
        wait_or_stop(proc, port, timeout_s=60)
    return Service(name, "", port or 0, proc)


def _keep(supervisor: Supervisor, name: str, args: list[str], env: dict[str, str],
          port: int | None, module: str = "coordinator.cli") -> None:
    """Start a part with `_spawn`, and again with the same arguments, environment and port
    whenever it dies."""
    supervisor.keep(partial(_spawn, name, args, env, port, module))


def _say(message: str) -> None:
    """Tell the operator what the supervisor did (plain words, never read as markup)."""
    console.print(escape(message), soft_wrap=True)


def run_up(settings: Settings) -> int:
    """Start what is missing, print where everything is, start again whatever dies (with
    backoff), stop it all on Ctrl-C."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(say=_say)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        # Kept across restarts, so links, reply codes and sessions outlive a restart.
        kept = kept_secrets(settings.secrets_file, os.environ)
        settings = settings.model_copy(update={  # for what this process does itself
            name.removeprefix("LOA_").lower(): SecretStr(kept[name])
            for name in MADE if name in kept})
        kafka_url, redis_url, nearest_redis = _infrastructure(settings, supervisor)
        if not settings.redis_url:  # its own embedded Redis: migrate before the worker starts
            for step in migrate_embedded(redis_url, settings.redis_prefix).steps:
                _say(f"Redis layout: {step.name}: {step.summary}")
                for change in step.changes:
                    _say(f"  {change}")
            for line in move_embedded_map(redis_url, settings):
                _say(line)
        env = {**os.environ, "LOA_KAFKA_URL": kafka_url, "LOA_REDIS_URL": nearest_redis,
               "LOA_DATA_DIR": str(settings.data_dir), **kept}
        sandboxes = _sandboxes(settings, env, supervisor)
        env |= sandboxes
        metrics_port = settings.worker_metrics_port or free_port()
        _keep(supervisor, "worker", ["worker"],
              {**env, "LOA_WORKER_METRICS_PORT": str(metrics_port)}, None)
        scheduler_port = settings.scheduler_metrics_port or free_port()
        _keep(supervisor, "scheduler", ["scheduler"],
              {**env, "LOA_SCHEDULER_METRICS_PORT": str(scheduler_port)}, None)
        _keep(supervisor, "web", ["web"], env, settings.web_port)
        run = {"kafka_url": kafka_url, "redis_url": redis_url, "web_port": settings.web_port,
               **{k.removeprefix("LOA_").lower(): v for k, v in sandboxes.items()}}
        _write_run_file(settings, run, supervisor)
        _announce(settings, kafka_url, redis_url, (metrics_port, scheduler_port), sandboxes)
        _first_admin(settings, redis_url)
        while not stopping:
            if supervisor.check():
                _write_run_file(settings, run, supervisor)
            time.sleep(0.3)
        return 0
    except (RuntimeError, OSError, ConfigError, LayoutError, BrokerUnavailable,
            AreaMapMismatch) as exc:
        console.print(f"[red]could not start: {escape(str(exc))}[/]")
        return 1
    finally:
        console.print("stopping…")
        # The scheduler first (a timer it fired while the worker stops would wait for the
        # outbox's resend after the next start), then the worker; the web is still there
        # for the provider's status callbacks of the last messages the worker handed over
        # (the SMS sandbox posts them within 0.15 s; a worker takes a second or more).
        supervisor.stop_all(first=("scheduler", "worker"))
        settings.run_file.unlink(missing_ok=True)
        console.print("stopped")


def _write_run_file(settings: Settings, run: dict[str, object], supervisor: Supervisor
                    ) -> None:
    """Write where everything is and the process ids of what runs now (again after a
    restart). Private: it holds the SMS sandbox's token."""
    write_private(settings.run_file, json.dumps({**run, "pids": supervisor.pids()}))


def _sandboxes(settings: Settings, env: dict[str, str], supervisor: Supervisor
               ) -> dict[str, str]:
    """Start the local Twilio and SMTP stand-ins (``sandbox``, as their own programs) for
    what is not configured; their env."""
    extra: dict[str, str] = {}
    if not settings.twilio_account_sid:
        port = free_port()
        token = secrets.token_hex(16)
        extra |= {"LOA_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "LOA_TWILIO_AUTH_TOKEN": token,
                  "LOA_TWILIO_FROM_NUMBER": "+15005550006",
                  "LOA_TWILIO_BASE_URL": f"http://127.0.0.1:{port}"}
        _keep(supervisor, "sms-sandbox", ["--port", str(port)], {**env, **extra}, port,
              module="sandbox.sms")
    if not settings.smtp_host:
        port = free_port()
        extra |= {"LOA_SMTP_HOST": "127.0.0.1", "LOA_SMTP_PORT": str(port)}
        _keep(supervisor, "smtp-sandbox",
              ["--port", str(port), "--maildir", str(settings.data_dir / "mail")], env, port,
              module="sandbox.smtp")
    return extra


def _first_admin(settings: Settings, redis_url: str) -> None:
    """On a Redis with no accounts yet, make `admin` and print its password once."""
    password = secrets.token_urlsafe(12)

    made = run_with_redis(redis_url,
                          lambda redis: first_admin(redis, Keys(settings.redis_prefix), password))
    if made is not None:
        console.print(f"""[bold]Console login[/] (made now, shown once): {settings.web_url()}/login
  username admin   password [bold]{password}[/]
  at first login you set up a second factor: add the key shown to an authenticator app
  (TOTP) and type its code
  more accounts: .venv/bin/loa accounts add NAME --role duty_officer|approver|admin --person ID
""")


def _infrastructure(settings: Settings, supervisor: Supervisor) -> tuple[str, str, str]:
    """Start the embedded broker and Redis for what is not configured (each again on its own
    port when it dies); create the topics. Their URLs, and Redis's for the processes started
    here (the embedded one's Unix socket: cheaper than TCP for both ends, and unchanged
    across its restarts, as its port is)."""
    kafka_url = settings.kafka_url or _keep_broker(settings, supervisor)
    if settings.redis_url:
        redis_url = nearest = settings.redis_url
    else:
        redis = supervisor.keep(partial(
            start_redis, settings.data_dir / "redis",  # the same append-only file when restarted
            settings.embedded_redis_port or free_port()))
        redis_url, nearest = redis.url, redis.nearest_url
    _create_topics(settings, kafka_url)
    return kafka_url, redis_url, nearest


def _keep_broker(settings: Settings, supervisor: Supervisor) -> str:
    """Start the embedded Tansu; a restarted one is empty (memory only): its topics are made
    again before anything is told it is back."""
    broker = supervisor.keep(
        partial(start_tansu, settings.embedded_broker_port or free_port(),
                log_path=settings.data_dir / "broker.log"),
        after_restart=lambda again: _topics_again(settings, again.url))
    return broker.url


def _create_topics(settings: Settings, kafka_url: str) -> None:
    """Create the topics Loa uses that `kafka_url` does not have yet."""
    asyncio.run(ensure_topics(settings.model_copy(update={"kafka_url": kafka_url})))


def _topics_again(settings: Settings, kafka_url: str) -> None:
    """The topics of a restarted broker; RuntimeError (a failed restart) when it does not
    answer."""
    try:
        _create_topics(settings, kafka_url)
    except BrokerUnavailable as exc:
        raise RuntimeError(str(exc)) from exc


def _announce(settings: Settings, kafka_url: str, redis_url: str, metrics: tuple[int, int],
              sandboxes: dict[str, str]) -> None:
    sms = sandboxes.get("LOA_TWILIO_BASE_URL", "Twilio (configured)")
    smtp = (f"127.0.0.1:{sandboxes['LOA_SMTP_PORT']} (local, kept in {settings.data_dir}/mail)"
            if "LOA_SMTP_PORT" in sandboxes else f"{settings.smtp_host} (configured)")
    embedded_b = "" if settings.kafka_url else " (embedded Tansu, memory only)"
    embedded_r = ("" if settings.redis_url
                  else f" (embedded, append-only in {settings.data_dir}/redis)")
    console.print(f"""
[bold]Loa is up.[/]
  web          {settings.web_url()}   (public page; /docs, /metrics: monitor token)
  broker       {kafka_url}{embedded_b}
  redis        {redacted(redis_url)}{embedded_r}
  worker       metrics at http://127.0.0.1:{metrics[0]}/metrics
  scheduler    escalation timers, the audit seal; metrics at http://127.0.0.1:{metrics[1]}/metrics
  sms          {sms}
  email        {smtp}   (what the sandboxes received: `loa outbox`)
  playbooks    {settings.playbooks_dir}
  config       {settings.config_dir}

In another shell (every acting command needs a credential; tokens are shown once):
  .venv/bin/loa tokens add desk --role reporter --area hn-ba-dinh
  .venv/bin/loa login        # paste the desk's token
  .venv/bin/loa report --kind flood --severity severe --area hn-ba-dinh \\
      --title "Ngập sâu trên phố Kim Mã" --details "Nước ngập 40 cm" --wait
  .venv/bin/loa tokens add an --role approver --person nguyen-van-an
  .venv/bin/loa approve APR-00001-1 --token <an's token>
  .venv/bin/loa statements

A part that dies is started again; Ctrl-C stops everything.""")
